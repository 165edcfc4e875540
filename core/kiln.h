// The one header an embedding program includes: tensors, autograd, ops, generators.
#pragma once

#include "core/autograd.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/generator.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "core/tensor.h"
