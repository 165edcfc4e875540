# The README's example programs must be byte-identical to the files the embed test compiles
# and runs, so the two cannot drift. The README marks each block with an HTML comment
# naming its file ("<!-- tests/embed/consumer/NAME.cpp: compiled and run by the embed test;
# keep identical -->"); the block is the ```cpp fence that follows it.
# Run as: cmake -DKILN_SOURCE_DIR=<kiln source dir> -P tests/embed/check_readme_example.cmake
cmake_minimum_required(VERSION 3.25)

if(NOT KILN_SOURCE_DIR)
  get_filename_component(KILN_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
endif()
file(READ "${KILN_SOURCE_DIR}/README.md" readme)

# check_block(REL): the README's block marked for REL equals the file REL.
function(check_block example_rel)
  set(marker "<!-- ${example_rel}: compiled and run by the embed test; keep identical -->")
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
    get_filename_component(stem "${example_rel}" NAME_WE)
    file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/readme_${stem}_block.cpp" "${block}")
    message(FATAL_ERROR "the README's example differs from ${example_rel}: copy one onto the other "
                        "(the README's block is in ${CMAKE_CURRENT_BINARY_DIR}/readme_${stem}_block.cpp)")
  endif()
  message(STATUS "README example == ${example_rel}")
endfunction()

# Every marked block: a C++ block in the README that is not marked is not compiled anywhere.
string(REGEX MATCHALL "<!-- tests/embed/consumer/[A-Za-z0-9_]+\\.cpp: compiled and run by the embed test" marks
       "${readme}")
list(LENGTH marks count)
if(count LESS 3)
  message(FATAL_ERROR "README.md: expected the marked examples train_step.cpp, train_module.cpp and top_class.cpp, "
                      "found ${count}")
endif()
foreach(m IN LISTS marks)
  string(REGEX REPLACE "^<!-- ([^:]+):.*" "\\1" rel "${m}")
  check_block("${rel}")
endforeach()
