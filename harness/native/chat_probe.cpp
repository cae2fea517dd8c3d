// chat_probe: llama.cpp's chat layer (common/chat.h) without a model, as JSON lines on
// stdin/stdout. One request per line, one reply per line:
//   {"id":..,"ok":true,...} or {"id":..,"ok":false,"error":"<llama.cpp's exception message>"}
// render with "cache": true keeps the render for parse_batch requests with the same inputs.
// ops: render | parse | parse_batch | json_schema_to_grammar | version. Inputs are filled the way
// llama-server fills common_chat_templates_inputs (tools/server/server-common.cpp) and the
// streamed parse follows task_result_state::update_chat_msg (tools/server/server-task.cpp).
// `--abort-on-debug-op` enables op "debug_abort" (std::abort), and `--abort-on-template-marker`
// aborts a render or parse whose request (template, messages, ...) contains "harness-debug-abort":
// both only for the harness's own
// tests of restart mechanics (no real input is known to abort llama.cpp's chat layer).
// A request's "now" (unix seconds) freezes llama.cpp's clock for that request, as the harness
// freezes Python's for the in-process renderers: strftime_now() (jinja::context reads time()) and
// the date_string/datetime context (std::chrono::system_clock::now()) take no clock input, so
// the probe's own time() and clock_gettime() stand in for libc's (the executable exports them;
// see chat_probe.cmake) and answer that instant for CLOCK_REALTIME.
#include "chat.h"
#include "build-info.h"
#include "json-schema-to-grammar.h"

#include <dlfcn.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

// Compatibility across llama.cpp trees (flags set by chat_probe.cmake from the tree's headers):
// newer trees wrap the JSON library in common_json (common/json.h) and take it in the chat API;
// older ones (e.g. llama-cpp-python 0.3.30's) take nlohmann::ordered_json.
#if HARNESS_COMMON_JSON
using json = common_json;
#else
#include <nlohmann/json.hpp>
using json = nlohmann::ordered_json;
#endif

// one reply line; bad UTF-8 in llama.cpp's output is replaced, never an exception
static std::string dump_line(const json & j) {
#if HARNESS_COMMON_JSON
    return j.dump_safe();
#else
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
#endif
}

// --- the frozen clock ----------------------------------------------------------------------
static std::atomic<long long> g_fixed_now{-1};     // unix seconds; -1: the real clock

extern "C" int clock_gettime(clockid_t clk, struct timespec * ts) {
    using real_fn = int (*)(clockid_t, struct timespec *);
    static real_fn real = (real_fn) dlsym(RTLD_NEXT, "clock_gettime");
    long long fixed = g_fixed_now.load();
    if (fixed >= 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE) && ts != nullptr) {
        ts->tv_sec = (time_t) fixed;
        ts->tv_nsec = 0;
        return 0;
    }
    return real(clk, ts);
}

extern "C" time_t time(time_t * out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out != nullptr) *out = ts.tv_sec;
    return ts.tv_sec;
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

static json str_list(const std::vector<std::string> & v) {
    json a = json::array();
    for (const auto & s : v) a.push_back(s);
    return a;
}

static std::string str_field(const json & req, const char * key, const std::string & def = "") {
    return req.contains(key) && req.at(key).is_string() ? req.at(key).get<std::string>() : def;
}

static bool bool_field(const json & req, const char * key, bool def) {
    return req.contains(key) && req.at(key).is_boolean() ? req.at(key).get<bool>() : def;
}

struct rendered {
    common_chat_templates_ptr tmpls;
    common_chat_templates_inputs inputs;
    common_chat_params params;
};

static bool g_abort_on_marker = false;

static rendered do_render(const json & req) {
    rendered r;
    if (g_abort_on_marker && req.dump().find("harness-debug-abort") != std::string::npos) {
        std::cerr << "chat_probe: marker abort requested" << std::endl;
        std::abort();
    }
    g_fixed_now = req.contains("now") && req.at("now").is_number_integer() ? req.at("now").get<long long>() : -1;
    r.tmpls = common_chat_templates_init(nullptr, str_field(req, "template"),
                                         str_field(req, "bos_token"), str_field(req, "eos_token"));
    auto caps = common_chat_templates_get_caps(r.tmpls.get());
    auto & in = r.inputs;
    in.messages = common_chat_msgs_parse_oaicompat(req.value("messages", json::array()));
    json tools = req.value("tools", json());
    in.tools = common_chat_tools_parse_oaicompat(tools.is_null() ? json::array() : tools);
    in.tool_choice = common_chat_tool_choice_parse_oaicompat(str_field(req, "tool_choice", "auto"));
    in.use_jinja = true;
    in.parallel_tool_calls = bool_field(req, "parallel_tool_calls", caps["supports_parallel_tool_calls"]);
    in.add_generation_prompt = bool_field(req, "add_generation_prompt", true);
    in.reasoning_format = common_reasoning_format_from_name(str_field(req, "reasoning_format", "none"));
    in.enable_thinking = bool_field(req, "enable_thinking", true);
    in.now = std::chrono::system_clock::now();          // the frozen instant when "now" is given
    json kwargs = req.value("chat_template_kwargs", json::object());
    if (kwargs.is_object()) {
        for (const auto & item : kwargs.items()) {
            in.chat_template_kwargs[item.key()] = item.value().dump();
        }
    }
    // as the server: the "enable_thinking" kwarg overrides the flag
    auto it = in.chat_template_kwargs.find("enable_thinking");
    if (it != in.chat_template_kwargs.end()) {
        if (it->second == "true") in.enable_thinking = true;
        else if (it->second == "false") in.enable_thinking = false;
    }
    r.params = common_chat_templates_apply(r.tmpls.get(), in);
    return r;
}

static json params_json(const common_chat_params & p) {
    json triggers = json::array();
    for (const auto & t : p.grammar_triggers) {
        json o = json::object();
        o["type"] = std::string(trigger_type_name(t.type));
        o["value"] = t.value;
        o["token"] = (int) t.token;
        triggers.push_back(o);
    }
    json o = json::object();
    o["format"] = std::string(common_chat_format_name(p.format));
    o["grammar"] = p.grammar;
    o["grammar_lazy"] = p.grammar_lazy;
    o["grammar_triggers"] = triggers;
    o["preserved_tokens"] = str_list(p.preserved_tokens);
    o["additional_stops"] = str_list(p.additional_stops);
    o["generation_prompt"] = p.generation_prompt;
    o["supports_thinking"] = p.supports_thinking;
    o["thinking_start_tag"] = p.thinking_start_tag;
#if HARNESS_THINKING_END_TAGS
    o["thinking_end_tags"] = str_list(p.thinking_end_tags);
#else                                   // one end tag in older trees: the same shape either way
    o["thinking_end_tags"] = str_list(p.thinking_end_tag.empty() ? std::vector<std::string>{}
                                                                 : std::vector<std::string>{p.thinking_end_tag});
#endif
    o["has_parser"] = !p.parser.empty();
    return o;
}

static json msg_json(const common_chat_msg & m) {
    json calls = json::array();
    for (const auto & c : m.tool_calls) {
        json o = json::object();
        o["name"] = c.name;
        o["arguments"] = c.arguments;
        o["id"] = c.id;
        calls.push_back(o);
    }
    json o = json::object();
    o["content"] = m.content;
    o["reasoning_content"] = m.reasoning_content;
    o["tool_calls"] = calls;
    return o;
}

static json diff_json(const common_chat_msg_diff & d) {
    json o = json::object();
    o["content_delta"] = d.content_delta;
    o["reasoning_content_delta"] = d.reasoning_content_delta;
    if (d.tool_call_index != std::string::npos) {
        o["tool_call_index"] = (int) d.tool_call_index;
        o["name"] = d.tool_call_delta.name;
        o["arguments"] = d.tool_call_delta.arguments;
        o["id"] = d.tool_call_delta.id;
    }
    return o;
}

// what an OpenAI client accumulates from the deltas
static void apply_diff(common_chat_msg & acc, const common_chat_msg_diff & d) {
    acc.content += d.content_delta;
    acc.reasoning_content += d.reasoning_content_delta;
    if (d.tool_call_index != std::string::npos) {
        while (acc.tool_calls.size() <= d.tool_call_index) acc.tool_calls.push_back({});
        auto & c = acc.tool_calls[d.tool_call_index];
        if (!d.tool_call_delta.name.empty()) c.name = d.tool_call_delta.name;
        if (!d.tool_call_delta.id.empty()) c.id = d.tool_call_delta.id;
        c.arguments += d.tool_call_delta.arguments;
    }
}

static common_chat_parser_params parser_params(const rendered & r, bool stream) {
    common_chat_parser_params pp(r.params);
    pp.reasoning_format = r.inputs.reasoning_format;
    pp.reasoning_in_content = stream && pp.reasoning_format == COMMON_REASONING_FORMAT_DEEPSEEK_LEGACY;
    pp.parse_tool_calls = !r.inputs.tools.empty() && r.inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;
    if (!r.params.parser.empty()) pp.parser.load(r.params.parser);
    return pp;
}

static void do_parse(const json & req, json & out) {
    rendered r = do_render(req);
    std::string text = str_field(req, "text");
    out["message"] = msg_json(common_chat_parse(text, false, parser_params(r, false)));
    if (!req.contains("pieces") || !req.at("pieces").is_array()) return;
    // the streamed path: update_chat_msg after every piece, then once more non-partial
    auto pp = parser_params(r, true);
    std::vector<std::string> ids_cache;
    int next_id = 0;
    auto gen_id = [&]() { return "call_" + std::to_string(next_id++); };
    common_chat_msg prev, acc;
    std::string generated;
    json diffs = json::array();
    auto step = [&](bool partial) {
        auto m = common_chat_parse(generated, partial, pp);
        if (m.empty()) return;
        m.set_tool_call_ids(ids_cache, gen_id);
        for (const auto & d : common_chat_msg_diff::compute_diffs(prev, m)) {
            diffs.push_back(diff_json(d));
            apply_diff(acc, d);
        }
        prev = m;
    };
    const json & pieces = req.at("pieces");
    for (size_t i = 0; i < pieces.size(); i++) {
        generated += pieces.at(i).get<std::string>();
        try {
            step(true);
        } catch (const std::exception & e) {
            out["partial_error"] = std::string(e.what());
            break;
        }
    }
    step(false);
    out["streamed"] = msg_json(acc);
    out["diffs"] = diffs;
}

// parse_batch: one render, then for each of req.texts ({text, splits: [[end offset of each piece,
// in UTF-8 bytes], ...]}) the non-streamed parse and the streamed result of every split set,
// exactly as do_parse streams them one set at a time. common_chat_parse is a pure function of
// (text, is_partial, parser params), so the partial parse of each prefix is computed once and
// shared by every split set that ends a piece there. Identical streamed results are grouped:
// streams: [{splits: [indices into splits], streamed, partial_error?, final_error?}]; with
// deepseek-legacy also stream_message (or stream_error): the finished text parsed as a stream
// ends, reasoning inline.
struct parsed_prefix {
    bool ok = true;
    common_chat_msg msg;
    std::string error;
};

static json stream_from_prefixes(const std::vector<size_t> & ends, std::map<size_t, parsed_prefix> & memo,
                                 const std::string & text, const common_chat_parser_params & pp) {
    std::vector<std::string> ids_cache;
    int next_id = 0;
    auto gen_id = [&]() { return "call_" + std::to_string(next_id++); };
    common_chat_msg prev, acc;
    json out = json::object();
    auto apply = [&](common_chat_msg m) {           // update_chat_msg on an already parsed message
        if (m.empty()) return;
        m.set_tool_call_ids(ids_cache, gen_id);
        for (const auto & d : common_chat_msg_diff::compute_diffs(prev, m)) apply_diff(acc, d);
        prev = m;
    };
    for (size_t end : ends) {
        auto it = memo.find(end);
        if (it == memo.end()) {
            parsed_prefix p;
            try {
                p.msg = common_chat_parse(text.substr(0, end), true, pp);
            } catch (const std::exception & e) {
                p.ok = false;
                p.error = e.what();
            }
            it = memo.emplace(end, std::move(p)).first;
        }
        if (!it->second.ok) {
            out["partial_error"] = it->second.error;
            break;
        }
        try {
            apply(it->second.msg);
        } catch (const std::exception & e) {        // compute_diffs refused the sequence
            out["partial_error"] = std::string(e.what());
            break;
        }
    }
    try {
        apply(common_chat_parse(text, false, pp));
    } catch (const std::exception & e) {
        out["final_error"] = std::string(e.what());
    }
    out["streamed"] = msg_json(acc);
    return out;
}

// The renders parse_batch needs, kept for the life of the probe by their inputs: the harness
// asks for a template's chat params first and then parses with the same inputs (a render with
// tools runs llama.cpp's template analysis, tens of milliseconds).
static const rendered & cached_render(const json & req) {
    static std::map<std::string, rendered> cache;
    std::string k;
    for (const char * f : {"template", "bos_token", "eos_token", "messages", "tools", "tool_choice",
                           "parallel_tool_calls", "add_generation_prompt", "reasoning_format",
                           "enable_thinking", "chat_template_kwargs", "now"}) {
        k += (req.contains(f) ? dump_line(req.at(f)) : std::string("-")) + '\x1f';
    }
    auto it = cache.find(k);
    if (it == cache.end()) it = cache.emplace(k, do_render(req)).first;
    return it->second;
}

static void do_parse_batch(const json & req, json & out) {
    const rendered & r = cached_render(req);
    auto pp_full = parser_params(r, false);
    auto pp_stream = parser_params(r, true);
    json results = json::array();
    for (const auto & entry : req.value("texts", json::array())) {
        std::string text = entry.value("text", std::string());
        json res = json::object();
        try {
            res["message"] = msg_json(common_chat_parse(text, false, pp_full));
        } catch (const std::exception & e) {
            res["error"] = std::string(e.what());
        }
        if (pp_stream.reasoning_in_content) {       // deepseek-legacy: a stream inlines the reasoning
            try {
                res["stream_message"] = msg_json(common_chat_parse(text, false, pp_stream));
            } catch (const std::exception & e) {
                res["stream_error"] = std::string(e.what());
            }
        }
        std::map<size_t, parsed_prefix> memo;
        std::map<std::string, size_t> seen;         // streamed result (dumped) -> index in streams
        json streams = json::array();
        const json splits = entry.value("splits", json::array());
        for (size_t i = 0; i < splits.size(); i++) {
            std::vector<size_t> ends;
            for (const auto & e : splits.at(i)) {
                size_t end = e.get<size_t>();
                ends.push_back(end < text.size() ? end : text.size());
            }
            json s = stream_from_prefixes(ends, memo, text, pp_stream);
            std::string key = dump_line(s);
            auto it = seen.find(key);
            if (it == seen.end()) {
                s["splits"] = json::array();
                it = seen.emplace(key, streams.size()).first;
                streams.push_back(s);
            }
            streams.at(it->second)["splits"].push_back(i);
        }
        res["streams"] = streams;
        res["partial_parses"] = memo.size();
        results.push_back(res);
    }
    out["params"] = params_json(r.params);
    out["results"] = results;
}

int main(int argc, char ** argv) {
    bool debug_abort = false;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if (arg == "--abort-on-debug-op") debug_abort = true;
        else if (arg == "--abort-on-template-marker") g_abort_on_marker = true;
    }
    std::ios::sync_with_stdio(false);
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.empty()) continue;
        json out = json::object();
        try {
            json req = json::parse(line);
            out["id"] = req.value("id", json());
            std::string op = str_field(req, "op");
            if (op == "render") {
                auto reply = [&](const rendered & r) {
                    out["prompt"] = r.params.prompt;
                    out["params"] = params_json(r.params);
                };
                if (req.value("cache", false)) reply(cached_render(req));
                else reply(do_render(req));
            } else if (op == "parse") {
                do_parse(req, out);
            } else if (op == "parse_batch") {
                do_parse_batch(req, out);
            } else if (op == "json_schema_to_grammar") {
                out["grammar"] = json_schema_to_grammar(req.value("schema", json()));
            } else if (op == "version") {
                out["build_info"] = std::string(llama_build_info());
                out["commit"] = std::string(llama_commit());
                out["build_number"] = llama_build_number();
            } else if (op == "debug_abort" && debug_abort) {
                std::cerr << "chat_probe: debug_abort requested" << std::endl;
                std::abort();
            } else {
                throw std::invalid_argument("unknown op '" + op + "'");
            }
            out["ok"] = true;
        } catch (const std::exception & e) {
            json err = json::object();
            err["id"] = out.contains("id") ? out.at("id") : json();
            err["ok"] = false;
            err["error"] = std::string(e.what());
            out = err;
        }
        std::cout << dump_line(out) << "\n" << std::flush;
    }
    return 0;
}
