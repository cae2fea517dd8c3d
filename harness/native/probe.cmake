# Adds the harness's chat probe as one more target of llama.cpp's own build, without editing
# the tree: the build passes -DCMAKE_PROJECT_INCLUDE=<a copy of this file in the build cache>,
# which CMake includes right after the tree's first project() call. Target names in
# target_link_libraries are resolved when the build system is generated, so linking to
# llama.cpp's `llama-common` and `llama` targets (defined later) works.
include_guard(GLOBAL)

add_executable(harness-chat-probe EXCLUDE_FROM_ALL "${CMAKE_CURRENT_LIST_DIR}/chat_probe.cpp")
target_compile_features(harness-chat-probe PRIVATE cxx_std_17)
target_link_libraries(harness-chat-probe PRIVATE llama-common llama)
# the tree sets CMAKE_RUNTIME_OUTPUT_DIRECTORY only after project(): say it here
set_target_properties(harness-chat-probe PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
