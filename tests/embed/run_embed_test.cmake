# Proves that an installed kiln is usable from another CMake project:
#   1. cmake --install <kiln build> --prefix <work>/prefix
#   2. check the package layout (headers, library, kilnConfig.cmake)
#   3. configure tests/embed/consumer with -DCMAKE_PREFIX_PATH=<work>/prefix, build it
#   4. run the consumer (no LD_LIBRARY_PATH: the installed libkiln.so must be found the way
#      a real user's program finds it) and require exit status 0.
#   5. run the README's examples: consumer/train_step.cpp, then consumer/top_class.cpp on a weights file and an image that
#      consumer/make_fixture writes (removed afterwards); it must print the expected class.
#   6. configure the consumer against the build tree itself (-Dkiln_DIR=<kiln build>), build
#      and run its first program.
# Run as: cmake -DKILN_BUILD_DIR=<kiln build dir> [-DKILN_EMBED_WORK_DIR=<dir>]
#               [-DKILN_EMBED_GENERATOR=Ninja] [-DKILN_EMBED_MAKE_PROGRAM=<ninja>]
#               [-DKILN_EMBED_CXX_COMPILER=<c++>] [-DKILN_EMBED_BUILD_TYPE=Release]
#               -P tests/embed/run_embed_test.cmake
cmake_minimum_required(VERSION 3.25)

if(NOT KILN_BUILD_DIR)
  message(FATAL_ERROR "run_embed_test: pass -DKILN_BUILD_DIR=<kiln build dir>")
endif()
get_filename_component(KILN_BUILD_DIR "${KILN_BUILD_DIR}" ABSOLUTE)
if(NOT EXISTS "${KILN_BUILD_DIR}/cmake_install.cmake")
  message(FATAL_ERROR "run_embed_test: ${KILN_BUILD_DIR} is not a configured kiln build dir "
                      "(no cmake_install.cmake)")
endif()
if(NOT KILN_EMBED_WORK_DIR)
  set(KILN_EMBED_WORK_DIR "${KILN_BUILD_DIR}/embed-test")
endif()
if(NOT KILN_EMBED_CONSUMER_DIR)
  set(KILN_EMBED_CONSUMER_DIR "${CMAKE_CURRENT_LIST_DIR}/consumer")
endif()
if(NOT KILN_EMBED_GENERATOR)
  set(KILN_EMBED_GENERATOR "Ninja")
endif()

set(prefix "${KILN_EMBED_WORK_DIR}/prefix")
set(consumer_build "${KILN_EMBED_WORK_DIR}/consumer-build")
# Start fresh every time so a stale install or cache cannot hide a broken package.
file(REMOVE_RECURSE "${prefix}" "${consumer_build}")
file(MAKE_DIRECTORY "${KILN_EMBED_WORK_DIR}")

# Runs one step; on failure prints its output and stops the test.
function(embed_step name)
  message(STATUS "embed: ${name}: ${ARGN}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)
  message("${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "embed: step '${name}' failed (exit status ${rc})")
  endif()
endfunction()

# 1. install
set(config_args)
if(KILN_EMBED_BUILD_TYPE)
  set(config_args --config "${KILN_EMBED_BUILD_TYPE}")
endif()
embed_step(install "${CMAKE_COMMAND}" --install "${KILN_BUILD_DIR}" --prefix "${prefix}" ${config_args})

# 2. layout: what find_package(kiln) users rely on. The lib dir may be lib, lib64 or
#    lib/<multiarch> (GNUInstallDirs), so the library and config are searched for.
set(missing)
foreach(f include/kiln/core/kiln.h include/kiln/core/tensor.h include/kiln/core/ops.h)
  if(NOT EXISTS "${prefix}/${f}")
    list(APPEND missing "${f}")
  endif()
endforeach()
# kernels/ is internal: installed, it would look like API no public header needs.
file(GLOB_RECURSE kernel_headers RELATIVE "${prefix}" "${prefix}/include/kiln/kernels/*")
if(kernel_headers)
  message(FATAL_ERROR "embed: internal headers were installed: ${kernel_headers}")
endif()
file(GLOB_RECURSE config_files "${prefix}/lib*/kilnConfig.cmake")
if(NOT config_files)
  list(APPEND missing "lib/cmake/kiln/kilnConfig.cmake")
endif()
file(GLOB_RECURSE libs "${prefix}/lib*/libkiln.so" "${prefix}/lib*/libkiln.a")
if(NOT libs)
  list(APPEND missing "lib/libkiln.so")
endif()
file(GLOB_RECURSE stray RELATIVE "${prefix}" "${prefix}/include/*.cpp" "${prefix}/include/*.cu")
if(missing OR stray)
  message(FATAL_ERROR "embed: the installed package under ${prefix} is wrong: missing [${missing}]; "
                      "sources installed as headers [${stray}]")
endif()

# 3. configure and build the consumer
set(gen_args -G "${KILN_EMBED_GENERATOR}")
if(KILN_EMBED_MAKE_PROGRAM)
  list(APPEND gen_args "-DCMAKE_MAKE_PROGRAM=${KILN_EMBED_MAKE_PROGRAM}")
endif()
if(KILN_EMBED_CXX_COMPILER)
  list(APPEND gen_args "-DCMAKE_CXX_COMPILER=${KILN_EMBED_CXX_COMPILER}")
endif()
if(KILN_EMBED_BUILD_TYPE)
  list(APPEND gen_args "-DCMAKE_BUILD_TYPE=${KILN_EMBED_BUILD_TYPE}")
endif()
embed_step(configure "${CMAKE_COMMAND}" -S "${KILN_EMBED_CONSUMER_DIR}" -B "${consumer_build}" ${gen_args}
  "-DCMAKE_PREFIX_PATH=${prefix}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)

# find_package must have taken kiln from our prefix, not from some other install.
file(STRINGS "${consumer_build}/CMakeCache.txt" kiln_dir_line REGEX "^kiln_DIR:")
string(REGEX REPLACE "^kiln_DIR:[A-Z]+=" "" kiln_dir "${kiln_dir_line}")
file(REAL_PATH "${prefix}" real_prefix)
if(EXISTS "${kiln_dir}")
  file(REAL_PATH "${kiln_dir}" kiln_dir)
endif()
string(FIND "${kiln_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "embed: find_package(kiln) used '${kiln_dir}', not the package installed in ${prefix}")
endif()

embed_step(build "${CMAKE_COMMAND}" --build "${consumer_build}" ${config_args})

# 4. run
set(exe "${consumer_build}/kiln_consumer")
if(KILN_EMBED_BUILD_TYPE AND NOT EXISTS "${exe}" AND EXISTS "${consumer_build}/${KILN_EMBED_BUILD_TYPE}/kiln_consumer")
  set(exe "${consumer_build}/${KILN_EMBED_BUILD_TYPE}/kiln_consumer")  # multi-config generators
endif()
embed_step(run "${exe}")
# 4b. kiln::dist, when this kiln build had gloo: installed, found, linked, and its backends
#     registered (the consumer checks the registry).
if(EXISTS "${KILN_BUILD_DIR}/dist")
  get_filename_component(exe_dir "${exe}" DIRECTORY)
  if(NOT EXISTS "${exe_dir}/dist_consumer")
    message(FATAL_ERROR "embed: this kiln build has kiln_dist, but find_package(kiln) gave no kiln::dist target")
  endif()
  embed_step(run_dist "${exe_dir}/dist_consumer")
endif()

# 5. the README examples (identical to the README's blocks: see check_readme_example.cmake):
#    train_step.cpp's one SGD step must exit 0, then top_class.cpp on a weights file and an
#    image make_fixture writes; its class must be the one the hand-written chain of kiln calls gives.
get_filename_component(exe_dir "${exe}" DIRECTORY)
embed_step(run_train_step "${exe_dir}/train_step")
embed_step(run_train_module "${exe_dir}/train_module")
# (top_class.cpp, identical to the README's block: see
#    check_readme_example.cmake) on a weights file and an image make_fixture writes; its
#    class must be the one the hand-written chain of kiln calls gives.
get_filename_component(exe_dir "${exe}" DIRECTORY)
set(fixture "${KILN_EMBED_WORK_DIR}/fixture")
file(REMOVE_RECURSE "${fixture}")
file(MAKE_DIRECTORY "${fixture}")
execute_process(COMMAND "${exe_dir}/make_fixture" "${fixture}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE expected ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT expected MATCHES "^class [0-9]+")
  message(FATAL_ERROR "embed: make_fixture failed (exit status ${rc}): ${expected}${err}")
endif()
string(STRIP "${expected}" expected)
execute_process(COMMAND "${exe_dir}/top_class" vgg11 "${fixture}/vgg11.h5" "${fixture}/image.png" 32
  RESULT_VARIABLE rc OUTPUT_VARIABLE got ERROR_VARIABLE err)
message("top_class: ${got}${err}")
file(REMOVE_RECURSE "${fixture}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "embed: the README example failed (exit status ${rc})")
endif()
string(FIND "${got}" ": ${expected}, p = " at)
if(at EQUAL -1)
  message(FATAL_ERROR "embed: the README example printed '${got}', expected ${expected} (the hand-written chain's)")
endif()

# 6. uninstalled: the same consumer against kiln's build tree (-Dkiln_DIR=<build dir>, the
#    targets export() writes there), configured, its first program built and run.
set(tree_build "${KILN_EMBED_WORK_DIR}/consumer-build-tree")
file(REMOVE_RECURSE "${tree_build}")
embed_step(configure_build_tree "${CMAKE_COMMAND}" -S "${KILN_EMBED_CONSUMER_DIR}" -B "${tree_build}" ${gen_args}
  "-Dkiln_DIR=${KILN_BUILD_DIR}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
embed_step(build_build_tree "${CMAKE_COMMAND}" --build "${tree_build}" --target kiln_consumer ${config_args})
set(tree_exe "${tree_build}/kiln_consumer")
if(KILN_EMBED_BUILD_TYPE AND NOT EXISTS "${tree_exe}")
  set(tree_exe "${tree_build}/${KILN_EMBED_BUILD_TYPE}/kiln_consumer")
endif()
embed_step(run_build_tree "${tree_exe}")
file(REMOVE_RECURSE "${tree_build}")
message(STATUS "embed: an installed kiln, and kiln's build tree, build and run in another CMake project, "
               "README example included")
