// Convolution through cuDNN's graph (backend) API, the path KILN_CONV_API=graph selects
// (core/conv_api.h): forward, backward-data and backward-filter as one-operation graphs on
// kiln's NHWC tensors, and conv + bias + ReLU as one fused forward graph. Engine configs
// come from cuDNN's heuristics filtered by their numerical notes (strict fp32 admits no
// tensor-core engine); a shape that gets no plan says so once on stderr and stays on the
// legacy API (cuda_conv.cpp), which the callers run whenever these return false.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/shape.h"
#include "kernels/cuda/cuda_conv_key.h"

namespace kiln::cuda {

// Runs the convolution k describes (k.dir) on d through a cached graph plan and returns
// true; false, with nothing written, when the API in force is legacy, when this key has
// no graph plan (said once on stderr), or when a buffer is not 16-byte aligned. y_shape:
// the [N, OH, OW, O] side (y, or dy for the backward directions).
bool graph_convolution(const ConvKey& k, const Shape& y_shape, const ConvData& d);

// Whether the graph API can take these buffers at all (16-byte aligned, as its plans assume):
// false is this call's matter, not the shape's (a view at an odd offset).
bool graph_buffers_aligned(const ConvData& d, const void* bias);
// y = max(conv(x, w) + bias, 0) as one forward graph (bias null: max(conv(x, w), 0)); k.dir
// is forward. False as above: the caller then runs the convolution and the ReLU apart.
bool graph_convolution_bias_relu(const ConvKey& k, const Shape& y_shape, const ConvData& d, const void* bias);

// Builds and finalizes k's operation graph (fused: k's forward, + bias when `bias`, then
// ReLU) with no device and no handle: "" when cuDNN accepts every descriptor, else what it
// refused and why. Engines and plans need a GPU; the descriptors do not, so a machine
// without one checks them (tests/kernels/test_conv_graph_cuda.cpp). Throws before cuDNN
// 9.8, which wants a handle for the graph.
std::string check_graph_descriptors(const ConvKey& k, const Shape& y_shape, bool fused, bool bias);

// cuDNN's description of the GPU `device` as JSON (cuDNN 9.8+; needs that GPU). With it,
// cuDNN can rank engines and build plans for that GPU on a machine without one ("deviceless"
// compilation): the GPU check saves the H200's (scripts/gpu_check.sh) so that later runs
// without a GPU can check more than the graphs' descriptors.
std::string device_properties_json(int device);

// Loads such JSON into a device-properties descriptor, no GPU needed: "" when cuDNN accepts
// it, else what it refused.
std::string check_device_properties(const std::string& json);

// What the graph path's plan search finds for k's graph (fused: + bias when `bias`, then
// ReLU) on the GPU that device_json describes, without that GPU: the engine configs its
// plan search meets (cuDNN's heuristics, mode A; the fallback list; every other engine by
// global index), those kiln's numerical-note filter admits for k's math, and those that
// finalize into a plan. Throws when cuDNN refuses the JSON or the graph. Lets a machine
// without a GPU check that every shape kiln runs has a plan there.
// all_sources: every source as an exhaustive search meets them (else the engine list only
// when the others gave no plan, as a search that is not exhaustive).
struct PlanCensus {
  int offered = 0, admitted = 0, plans = 0;
  std::vector<int64_t> workspaces;  // each plan's workspace in bytes
  std::vector<int64_t> engines;     // each plan's cuDNN engine (global index), in the same order
  // Plans whose workspace is at most `bytes`.
  int plans_within(int64_t bytes) const {
    return static_cast<int>(std::count_if(workspaces.begin(), workspaces.end(), [&](int64_t w) { return w <= bytes; }));
  }
};
PlanCensus census_without_device(const ConvKey& k, const Shape& y_shape, bool fused, bool bias,
                                 const std::string& device_json, bool all_sources = false);

}  // namespace kiln::cuda
