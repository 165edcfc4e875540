// kiln_dist's registration (dist.h).
#include "dist/dist.h"

#include "dist/gloo_communicator.h"
#ifdef KILN_DIST_NCCL
#include "dist/nccl_communicator.h"
#endif

namespace kiln::dist {

void register_backends() {
  register_communicator_backend("gloo", make_gloo_communicator);
#ifdef KILN_DIST_NCCL
  register_communicator_backend("nccl", make_nccl_communicator);
#endif
}

}  // namespace kiln::dist
