# The README's example program must be byte-identical to the file the embed test compiles
# and runs, so the two cannot drift. The README marks the block with an HTML comment naming
# the file; the block is the ```cpp fence that follows it.
# Run as: cmake -DKILN_SOURCE_DIR=<kiln source dir> -P tests/embed/check_readme_example.cmake
cmake_minimum_required(VERSION 3.25)

if(NOT KILN_SOURCE_DIR)
  get_filename_component(KILN_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
endif()
set(example_rel "tests/embed/consumer/top_class.cpp")
set(marker "<!-- ${example_rel}: compiled and run by the embed test; keep identical -->")
file(READ "${KILN_SOURCE_DIR}/README.md" readme)
file(READ "${KILN_SOURCE_DIR}/${example_rel}" example)

string(FIND "${readme}" "${marker}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md lacks the line '${marker}' before the example's code block")
endif()
string(SUBSTRING "${readme}" ${at} -1 rest)
set(fence "```cpp\n")
string(FIND "${rest}" "${fence}" open)
if(open EQUAL -1)
  message(FATAL_ERROR "README.md: no ```cpp block after '${marker}'")
endif()
string(LENGTH "${fence}" fence_len)
math(EXPR body_at "${open} + ${fence_len}")
string(SUBSTRING "${rest}" ${body_at} -1 rest)
string(FIND "${rest}" "```" close)
if(close EQUAL -1)
  message(FATAL_ERROR "README.md: the example's ```cpp block is not closed")
endif()
string(SUBSTRING "${rest}" 0 ${close} block)

if(NOT block STREQUAL example)
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/readme_example_block.cpp" "${block}")
  message(FATAL_ERROR "the README's example differs from ${example_rel}: copy one onto the other "
                      "(the README's block is in ${CMAKE_CURRENT_BINARY_DIR}/readme_example_block.cpp)")
endif()
message(STATUS "README example == ${example_rel}")
