#include "io/convention.h"

#include "core/error.h"

namespace kiln::io {

const char* convention_name(InputConvention c) {
  switch (c) {
    case InputConvention::caffe_bgr: return "caffe_bgr";
    case InputConvention::tf_rgb: return "tf_rgb";
    case InputConvention::torchvision_rgb: return "torchvision_rgb";
    case InputConvention::unknown: return "unknown";
  }
  return "unknown";
}

InputConvention parse_convention(const std::string& name) {
  for (InputConvention c : {InputConvention::caffe_bgr, InputConvention::torchvision_rgb, InputConvention::tf_rgb,
                            InputConvention::unknown})
    if (name == convention_name(c)) return c;
  KILN_FAIL("unknown input convention '", name, "': expected caffe_bgr, torchvision_rgb, tf_rgb or unknown");
}

Preprocessing preprocessing_for(InputConvention c, const char* what) {
  Preprocessing p;
  p.convention = c;
  switch (c) {
    case InputConvention::caffe_bgr:  // Keras/Caffe VGG16: BGR, mean subtracted, no scaling
      p.bgr = true;
      p.mean = {103.939f, 116.779f, 123.68f};
      return p;
    case InputConvention::tf_rgb:  // TF-slim VGG
      p.mean = {123.68f, 116.78f, 103.94f};
      return p;
    case InputConvention::torchvision_rgb:  // [0, 1], then ImageNet mean/std
      p.divisor = 255.0f;
      p.mean = {0.485f, 0.456f, 0.406f};
      p.std = {0.229f, 0.224f, 0.225f};
      return p;
    case InputConvention::unknown: break;
  }
  KILN_FAIL(what, ": the input convention is unknown (the weights record none); choose caffe_bgr, torchvision_rgb "
                  "or tf_rgb (vgg_finetune: --convention)");
}

}  // namespace kiln::io
