# Included into llama.cpp's configure with -DCMAKE_PROJECT_INCLUDE=<this file> (harness/run/probe_build.py):
# it adds one target, harness-chat-probe, built from harness/native/chat_probe.cpp in the
# llama-server build dir, without writing into the source tree. CMAKE_PROJECT_INCLUDE runs right
# after project(), before `common` exists, so the target is added when the top directory is done.
cmake_minimum_required(VERSION 3.19)
get_filename_component(HARNESS_CHAT_PROBE_SRC "${CMAKE_CURRENT_LIST_DIR}/chat_probe.cpp" ABSOLUTE)
function(harness_add_chat_probe)
    # the library is `llama-common` in newer trees, `common` in older ones
    if (TARGET llama-common)
        set(common_lib llama-common)
    elseif (TARGET common)
        set(common_lib common)
    else()
        message(WARNING "harness-chat-probe: this llama.cpp tree has no 'llama-common'/'common' target")
        return()
    endif()
    add_executable(harness-chat-probe "${HARNESS_CHAT_PROBE_SRC}")
    target_link_libraries(harness-chat-probe PRIVATE ${common_lib} llama)
    target_compile_features(harness-chat-probe PRIVATE cxx_std_17)
    # export the probe's time()/clock_gettime() so llama.cpp's shared libraries bind to them (the
    # frozen clock of chat_probe.cpp); dlsym(RTLD_NEXT) reaches libc's
    set_target_properties(harness-chat-probe PROPERTIES ENABLE_EXPORTS ON)
    target_link_libraries(harness-chat-probe PRIVATE ${CMAKE_DL_LIBS})
    # the compatibility flags of chat_probe.cpp, read from this tree's own headers
    if (EXISTS "${CMAKE_SOURCE_DIR}/common/json.h")
        target_compile_definitions(harness-chat-probe PRIVATE HARNESS_COMMON_JSON=1)
    endif()
    file(READ "${CMAKE_SOURCE_DIR}/common/chat.h" harness_chat_h)
    string(FIND "${harness_chat_h}" "thinking_end_tags" harness_pos)
    if (NOT harness_pos EQUAL -1)
        target_compile_definitions(harness-chat-probe PRIVATE HARNESS_THINKING_END_TAGS=1)
    endif()
    set_target_properties(harness-chat-probe PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
endfunction()
if (NOT HARNESS_CHAT_PROBE_ADDED)
    set(HARNESS_CHAT_PROBE_ADDED ON)
    cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL harness_add_chat_probe)
endif()
