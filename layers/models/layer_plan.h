// A model's layers as data (kind, channels, kernel, spatial sizes): what its builder makes
// and what benchmarks, peer scripts and the model spec read shapes from, so the layer list
// of a model is written once, next to its builder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

// One layer of a plan at a given image size.
struct LayerPlan {
  enum class Kind { conv, pool, fc, adaptive_avg_pool };
  Kind kind = Kind::conv;
  std::string name;              // kiln's layer name: "conv1_1", "pool1", "fc6"
  int64_t in_channels = 0;       // conv/pool: input channels; fc: input features
  int64_t out_channels = 0;      // conv/pool: output channels; fc: output features
  int64_t kernel = 0;            // square kernel side (conv, pool); 0 for fc
  int64_t stride = 0;            // 0 for fc
  int64_t pad = 0;
  int64_t in_size = 0;           // conv/pool: input map side (square maps); 1 for fc
  int64_t out_size = 0;          // conv/pool: output map side (adaptive pool: its grid); 1 for fc
  bool relu = false;             // a ReLU follows
  bool dropout = false;          // a dropout follows (after the ReLU)
  std::string keras;             // the layer's name in Keras files ("block1_conv1", "fc1")
  std::string torchvision;       // its torchvision module path ("features.0", "classifier.0")
};

// "conv", "pool", "fc" or "adaptive_avg_pool".
inline const char* layer_kind_name(LayerPlan::Kind kind) {
  switch (kind) {
    case LayerPlan::Kind::conv: return "conv";
    case LayerPlan::Kind::pool: return "pool";
    case LayerPlan::Kind::fc: return "fc";
    case LayerPlan::Kind::adaptive_avg_pool: return "adaptive_avg_pool";
  }
  return "?";
}

// True for layers with parameters (conv, fc).
inline bool has_weights(LayerPlan::Kind kind) { return kind == LayerPlan::Kind::conv || kind == LayerPlan::Kind::fc; }

}  // namespace kiln
