// harness-chat-probe: llama.cpp's chat layer (common/chat.h) driven with no model, as llama-server
// drives it, over JSON lines on stdin/stdout. One request per line, one reply per line.
//
//   {"op":"render", ...}                 -> {"ok":true,"prompt":...,"params":{...}}
//   {"op":"parse", ..., "text":..., "streams":[[piece, ...], ...]}
//                                         -> {"ok":true,"params":{...},"message":{...},
//                                             "streams":[{"diffs":[[...] per update],"final":{...}}]}
//   {"op":"json_schema_to_grammar","schema":{...}} -> {"ok":true,"grammar":...}
//   {"op":"version"}                     -> {"ok":true,"build":...,"api":...}
//
// The inputs are turned into common_chat_templates_inputs the way tools/server/server-common.cpp
// (oaicompat_chat_params_parse) does it, and the parse follows tools/server/server-task.cpp
// (task_result_state::update_chat_msg): the accumulated text re-parsed after each piece with
// is_partial=true, the diffs from common_chat_msg_diff::compute_diffs, then a final non-partial
// update. A C++ exception answers {"ok":false,"error":what()}; an abort ends the process (the
// harness reports its stderr and starts a new one).
//
// Supported trees: the common chat API of llama.cpp as vendored in llama-cpp-python 0.3.30 to
// 0.3.36. The few differences are bridged below (json type, thinking end tag(s)).

#include "arg.h"
#include "build-info.h"
#include "chat.h"
#include "common.h"
#include "json-schema-to-grammar.h"

#include <nlohmann/json.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <iostream>
#include <string>
#include <type_traits>
#include <vector>

using ojson = nlohmann::ordered_json;

// --- a frozen clock ------------------------------------------------------------------------------
// Templates read the date (strftime_now, date_string), and llama.cpp takes it from the real clock
// (jinja's std::time, common_chat_extra_context's system_clock::now), so a prompt would change
// every day. With HARNESS_FIXED_NOW=<epoch seconds> the probe's realtime clock stands still
// there, as the harness's in-process renderers do (harness/backends/rendering.py). The shared
// libraries bind these two symbols to the executable's definitions (they are in its dynamic
// symbol table because the libraries reference them); other clocks are passed to the kernel.
static long fixed_now() {
    static const long value = [] {
        const char * s = std::getenv("HARNESS_FIXED_NOW");
        return s && *s ? std::atol(s) : -1L;
    }();
    return value;
}

extern "C" int clock_gettime(clockid_t clk, struct timespec * ts) noexcept {
    if ((clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE) && fixed_now() >= 0) {
        ts->tv_sec  = fixed_now();
        ts->tv_nsec = 0;
        return 0;
    }
    return (int) syscall(SYS_clock_gettime, clk, ts);
}

extern "C" time_t time(time_t * out) noexcept {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}

// --- compatibility layer ------------------------------------------------------------------------
// The json type the chat API takes: nlohmann::ordered_json up to 0.3.30, common_json in 0.3.36.
template <typename A> A first_arg_of(std::vector<common_chat_tool> (*)(const A &));
using chat_json = decltype(first_arg_of(&common_chat_tools_parse_oaicompat));

static chat_json to_chat_json(const ojson & j) { return chat_json::parse(j.dump()); }

// 0.3.36: std::vector<std::string> thinking_end_tags; 0.3.30: std::string thinking_end_tag.
template <typename P>
static auto thinking_end_tags(const P & p, int) -> decltype(p.thinking_end_tags, std::vector<std::string>()) {
    return p.thinking_end_tags;
}
template <typename P>
static auto thinking_end_tags(const P & p, long) -> decltype(p.thinking_end_tag, std::vector<std::string>()) {
    if (p.thinking_end_tag.empty()) {
        return {};
    }
    return {p.thinking_end_tag};
}

// --- requests -----------------------------------------------------------------------------------
static std::string str_or(const ojson & j, const char * key, const std::string & dflt) {
    return j.contains(key) && j.at(key).is_string() ? j.at(key).get<std::string>() : dflt;
}

static const char * trigger_type_name(common_grammar_trigger_type t) {
    switch (t) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:        return "token";
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:         return "word";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:      return "pattern";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: return "pattern_full";
    }
    return "unknown";
}

// llama-server's own defaults, from its own argument parser (as the harness starts it: --jinja):
// reasoning_format, --reasoning (auto), --prefill-assistant, the default chat_template_kwargs
// (0.3.36 adds preserve_reasoning=true there), force_pure_content_parser.
static const common_params & server_defaults() {
    static const common_params params = [] {
        common_params p;
        const char * argv[] = {"llama-server", "--jinja", nullptr};
        if (!common_params_parse(2, const_cast<char **>(argv), p, LLAMA_EXAMPLE_SERVER)) {
            throw std::runtime_error("llama-server's argument parser refused '--jinja'");
        }
        return p;
    }();
    return params;
}

struct prepared {
    common_chat_templates_ptr    tmpls;
    common_chat_templates_inputs inputs;
    common_reasoning_format      reasoning_format = COMMON_REASONING_FORMAT_DEEPSEEK;
    bool                         parse_tool_calls = true;  // common_chat_parser_params default
};

// What llama-server does with a request body (oaicompat_chat_params_parse), for the fields the
// probe takes, on top of the server's defaults (server-context.cpp: enable_thinking is on when the
// template supports thinking and --reasoning is not off).
static prepared prepare(const ojson & req) {
    const common_params & srv = server_defaults();
    prepared p;
    p.tmpls = common_chat_templates_init(nullptr, req.at("template").get<std::string>(),
                                         str_or(req, "bos_token", ""), str_or(req, "eos_token", ""));
    auto & in = p.inputs;
    auto caps = common_chat_templates_get_caps(p.tmpls.get());
    ojson tools = req.contains("tools") && req.at("tools").is_array() ? req.at("tools") : ojson::array();
    in.messages              = common_chat_msgs_parse_oaicompat(to_chat_json(req.at("messages")));
    in.tools                 = common_chat_tools_parse_oaicompat(to_chat_json(tools));
    in.tool_choice           = common_chat_tool_choice_parse_oaicompat(str_or(req, "tool_choice", "auto"));
    in.use_jinja             = true;
    in.parallel_tool_calls   = req.contains("parallel_tool_calls") && req.at("parallel_tool_calls").is_boolean()
                                   ? req.at("parallel_tool_calls").get<bool>()
                                   : caps["supports_parallel_tool_calls"];
    in.add_generation_prompt = req.value("add_generation_prompt", true);
    if (srv.prefill_assistant && !in.messages.empty() && in.messages.back().role == "assistant") {
        in.continue_final_message = COMMON_CHAT_CONTINUATION_AUTO;
        in.add_generation_prompt  = false;
    }
    p.reasoning_format = srv.reasoning_format;
    std::string rf = str_or(req, "reasoning_format", "");
    if (!rf.empty()) {
        p.reasoning_format = common_reasoning_format_from_name(rf);
    }
    in.reasoning_format = p.reasoning_format;
    in.enable_thinking  = srv.enable_reasoning != 0 && common_chat_templates_support_enable_thinking(p.tmpls.get());
    in.chat_template_kwargs = srv.default_template_kwargs;
    if (req.contains("chat_template_kwargs") && req.at("chat_template_kwargs").is_object()) {
        for (const auto & item : req.at("chat_template_kwargs").items()) {
            in.chat_template_kwargs[item.key()] = item.value().dump();
        }
    }
    auto et = in.chat_template_kwargs.find("enable_thinking");
    if (et != in.chat_template_kwargs.end()) {
        if (et->second == "true") {
            in.enable_thinking = true;
        } else if (et->second == "false") {
            in.enable_thinking = false;
        } else if (!et->second.empty() && et->second[0] == '"') {
            throw std::invalid_argument("invalid type for \"enable_thinking\" (expected boolean, got string)");
        }
    }
    in.force_pure_content = srv.force_pure_content_parser;
    if (req.contains("parse_tool_calls") && req.at("parse_tool_calls").is_boolean()) {
        p.parse_tool_calls = req.at("parse_tool_calls").get<bool>();
    }
    return p;
}

static ojson params_json(const common_chat_params & cp) {
    ojson triggers = ojson::array();
    for (const auto & t : cp.grammar_triggers) {
        ojson o = {{"type", trigger_type_name(t.type)}, {"value", t.value}};
        if (t.token != LLAMA_TOKEN_NULL) {
            o["token"] = t.token;
        }
        triggers.push_back(o);
    }
    return {
        {"format", common_chat_format_name(cp.format)},
        {"grammar", cp.grammar},
        {"grammar_lazy", cp.grammar_lazy},
        {"grammar_triggers", triggers},
        {"preserved_tokens", cp.preserved_tokens},
        {"additional_stops", cp.additional_stops},
        {"generation_prompt", cp.generation_prompt},
        {"supports_thinking", cp.supports_thinking},
        {"thinking_start_tag", cp.thinking_start_tag},
        {"thinking_end_tags", thinking_end_tags(cp, 0)},
        {"has_parser", !cp.parser.empty()},
    };
}

static ojson msg_json(const common_chat_msg & m) {
    ojson calls = ojson::array();
    for (const auto & tc : m.tool_calls) {
        calls.push_back({{"name", tc.name}, {"arguments", tc.arguments}, {"id", tc.id}});
    }
    return {{"role", m.role}, {"content", m.content}, {"reasoning_content", m.reasoning_content},
            {"tool_calls", calls}};
}

static ojson diff_json(const common_chat_msg_diff & d) {
    ojson o = ojson::object();
    if (!d.reasoning_content_delta.empty()) {
        o["reasoning_content"] = d.reasoning_content_delta;
    }
    if (!d.content_delta.empty()) {
        o["content"] = d.content_delta;
    }
    if (d.tool_call_index != std::string::npos) {
        o["tool_call"] = {{"index", d.tool_call_index}, {"id", d.tool_call_delta.id},
                          {"name", d.tool_call_delta.name}, {"arguments", d.tool_call_delta.arguments}};
    }
    return o;
}

// The server's task_result_state, for one request: deterministic tool call ids instead of random.
struct stream_state {
    common_chat_parser_params params;
    std::string               generated_text;
    common_chat_msg           chat_msg;
    std::vector<std::string>  ids;
    int                       next_id = 0;

    std::vector<common_chat_msg_diff> update(const std::string & text_added, bool is_partial) {
        std::vector<common_chat_msg_diff> diffs;
        generated_text += text_added;
        auto prev    = chat_msg;
        auto new_msg = common_chat_parse(generated_text, is_partial, params);
        if (!new_msg.empty()) {
            new_msg.set_tool_call_ids(ids, [this]() { return "call_" + std::to_string(next_id++); });
            chat_msg = new_msg;
            diffs    = common_chat_msg_diff::compute_diffs(prev, chat_msg);
        }
        return diffs;
    }
};

static common_chat_parser_params parser_params(const prepared & p, const common_chat_params & cp, bool stream) {
    common_chat_parser_params pp(cp);
    pp.reasoning_format     = p.reasoning_format;
    pp.reasoning_in_content = stream && p.reasoning_format == COMMON_REASONING_FORMAT_DEEPSEEK_LEGACY;
    pp.parse_tool_calls     = p.parse_tool_calls;
    pp.is_continuation      = p.inputs.continue_final_message != COMMON_CHAT_CONTINUATION_NONE;
    if (!cp.parser.empty()) {
        pp.parser.load(cp.parser);
    }
    return pp;
}

static ojson stream_one(const prepared & p, const common_chat_params & cp, const ojson & pieces) {
    stream_state s;
    s.params = parser_params(p, cp, true);
    if (s.params.is_continuation && !s.params.echo) {
        s.chat_msg = common_chat_parse("", true, s.params);
    }
    ojson all = ojson::array();
    try {
        for (const auto & piece : pieces) {
            ojson ds = ojson::array();
            for (const auto & d : s.update(piece.get<std::string>(), true)) {
                ds.push_back(diff_json(d));
            }
            all.push_back(ds);
        }
        ojson ds = ojson::array();
        for (const auto & d : s.update("", false)) {   // the server's final result: no new text
            ds.push_back(diff_json(d));
        }
        all.push_back(ds);
    } catch (const std::exception & e) {
        // the server would end the stream with this error after the diffs already sent
        return {{"diffs", all}, {"final", msg_json(s.chat_msg)}, {"error", e.what()},
                {"after_pieces", all.size()}};
    }
    return {{"diffs", all}, {"final", msg_json(s.chat_msg)}};
}

static ojson handle(const ojson & req) {
    const std::string op = req.at("op").get<std::string>();
    if (op == "version") {
        return {{"ok", true}, {"build", llama_build_info()},
                {"api", std::is_same<chat_json, ojson>::value ? "nlohmann-json" : "common-json"},
                {"now", (long) std::time(nullptr)}};
    }
    if (op == "json_schema_to_grammar") {
        return {{"ok", true},
                {"grammar", json_schema_to_grammar(to_chat_json(req.at("schema")), req.value("force_gbnf", false))}};
    }
    prepared p  = prepare(req);
    auto     cp = common_chat_templates_apply(p.tmpls.get(), p.inputs);
    ojson    out = {{"ok", true}, {"prompt", cp.prompt}, {"params", params_json(cp)}};
    out["params"]["enable_thinking"]  = p.inputs.enable_thinking;   // the inputs the server used
    out["params"]["reasoning_format"] = common_reasoning_format_name(p.reasoning_format);
    ojson kwargs = ojson::object();
    for (const auto & kv : p.inputs.chat_template_kwargs) {
        kwargs[kv.first] = kv.second;
    }
    out["params"]["chat_template_kwargs"] = kwargs;
    if (op == "render") {
        return out;
    }
    if (op != "parse") {
        throw std::invalid_argument("unknown op '" + op + "'");
    }
    const std::string text = req.at("text").get<std::string>();
    stream_state whole;                       // non-streamed: one final update with the whole text
    whole.params = parser_params(p, cp, false);
    whole.update(text, false);
    out["message"] = msg_json(whole.chat_msg);
    // "streams": each a list of pieces, streamed as the server streams them
    if (req.contains("streams") && req.at("streams").is_array()) {
        ojson results = ojson::array();
        for (const auto & pieces : req.at("streams")) {
            results.push_back(stream_one(p, cp, pieces));
        }
        out["streams"] = results;
    }
    return out;
}

int main() {
    // Replies go to the original stdout; everything else that writes to fd 1 (llama.cpp's logs,
    // ggml's abort backtrace) lands on stderr, so the protocol stream holds only replies.
    FILE * replies = fdopen(dup(1), "w");
    dup2(2, 1);
    std::ios::sync_with_stdio(false);
    std::string line;
    while (std::getline(std::cin, line)) {
        ojson reply;
        try {
            reply = handle(ojson::parse(line));
        } catch (const std::exception & e) {
            reply = {{"ok", false}, {"error", e.what()}};
        }
        const std::string text = reply.dump(-1, ' ', false, ojson::error_handler_t::replace);
        fwrite(text.data(), 1, text.size(), replies);
        fputc('\n', replies);
        fflush(replies);
    }
    return 0;
}
