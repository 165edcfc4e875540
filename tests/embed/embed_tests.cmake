# The embedding test: install this build of kiln into a prefix under the build tree,
# then configure, build and run tests/embed/consumer against it with find_package(kiln).
# Included from tests/CMakeLists.txt; the work happens in run_embed_test.cmake at test time,
# after the kiln target has been built.
add_test(NAME embed.find_package_consumer_builds_and_runs
  COMMAND ${CMAKE_COMMAND}
    "-DKILN_BUILD_DIR=${kiln_BINARY_DIR}"
    "-DKILN_EMBED_WORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/embed"
    "-DKILN_EMBED_CONSUMER_DIR=${CMAKE_CURRENT_LIST_DIR}/consumer"
    "-DKILN_EMBED_GENERATOR=${CMAKE_GENERATOR}"
    "-DKILN_EMBED_MAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}"
    "-DKILN_EMBED_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
    "-DKILN_EMBED_BUILD_TYPE=$<CONFIG>"
    -P "${CMAKE_CURRENT_LIST_DIR}/run_embed_test.cmake")
set_tests_properties(embed.find_package_consumer_builds_and_runs PROPERTIES
  LABELS embed
  TIMEOUT 600)

# The README's example is the file the test above compiles and runs, byte for byte.
add_test(NAME embed.readme_example_matches_compiled_file
  COMMAND ${CMAKE_COMMAND} "-DKILN_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    -P "${CMAKE_CURRENT_LIST_DIR}/check_readme_example.cmake")
set_tests_properties(embed.readme_example_matches_compiled_file PROPERTIES LABELS embed)
