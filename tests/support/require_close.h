// Catch2's side of the shared comparison helper (check/compare.h): an assertion that
// prints compare()'s report of the worst element on failure.
#pragma once

#include "check/compare.h"

// REQUIRE that out is within atol + rtol * |ref| of ref, element by element.
#define KILN_REQUIRE_CLOSE(out, ref, atol, rtol)                                     \
  do {                                                                               \
    const auto kiln_cmp_ = ::kiln::check::compare((out), (ref), (atol), (rtol));     \
    INFO(kiln_cmp_.report);                                                          \
    REQUIRE(kiln_cmp_.ok);                                                           \
  } while (0)
