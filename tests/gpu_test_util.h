// GPU tests: skip visibly (ctest "Skipped", never "Passed") where no device is present.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "kernels/cuda_common.h"

#define STAPO_REQUIRE_GPU()                                                               \
  do {                                                                                    \
    std::string stapo_why_;                                                               \
    if (!stapo::cuda_device_available(&stapo_why_))                                       \
      GTEST_SKIP() << "no CUDA device (" << stapo_why_ << "): GPU test not run";           \
  } while (0)
