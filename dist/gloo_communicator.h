// The gloo backend's factory (gloo_communicator.cpp says why gloo).
#pragma once

#include <memory>

#include "train/communicator.h"

namespace kiln::dist {

// Joins the rendezvous env names and connects every rank over gloo's TCP transport.
std::unique_ptr<Communicator> make_gloo_communicator(const LaunchEnv& env);

}  // namespace kiln::dist
