#!/usr/bin/env python3
"""A two-turn tool-calling agent on an official SDK, with real local tools.

Usage: agent_loop_client.py API FIRST_TURN_CASSETTE

API is `chat` (OpenAI Chat Completions), `responses` (OpenAI Responses) or `anthropic`
(Anthropic Messages). Sends the first turn's recorded request (model, input, tools) through the
SDK, runs every tool the model asks for as a child process (`sh -c`, pausing before it prints
its result, so a tool takes time as real ones do), sends the results back in the same
conversation, and prints `tools NAMES` then `answer TEXT`. The SDKs call the providers' hosts;
the test harness sends those names to the replay server (see sdk_client.py).
"""
import json
import os
import subprocess
import sys

# What each tool runs: its first argument is the first value the model passed.
TOOLS = {
    "get_weather": 'sleep 0.3; echo "weather $0: 18C, sunny"',
    "get_news": 'sleep 0.2; echo "news $0: cable cars run late tonight"',
    "get_time": 'sleep 0.2; echo "time $0: 10:02"',
}
# The Anthropic recording asks about New York, whose weather the second turn knows.
ANTHROPIC_TOOLS = dict(TOOLS, get_weather='sleep 0.3; echo "weather $0: 64F, cloudy"')


def run_tool(table, name, arguments):
    first_value = next(iter(arguments.values()))
    return subprocess.run(["sh", "-c", table[name], first_value],
                          capture_output=True, text=True, check=True).stdout.strip()


def chat(body):
    from openai import OpenAI
    client = OpenAI(api_key=os.environ.get("LLMTAP_TEST_API_KEY", "sk-test"))
    messages = list(body["messages"])
    first = client.chat.completions.create(
        model=body["model"], messages=messages, tools=body["tools"], stream=False)
    asked = first.choices[0].message.tool_calls or []
    messages.append({
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": t.id, "type": "function",
                        "function": {"name": t.function.name, "arguments": t.function.arguments}}
                       for t in asked],
    })
    for call in asked:
        result = run_tool(TOOLS, call.function.name, json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    second = client.chat.completions.create(
        model=body["model"], messages=messages, tools=body["tools"], stream=False)
    return [t.function.name for t in asked], second.choices[0].message.content


def responses(body):
    from openai import OpenAI
    client = OpenAI(api_key=os.environ.get("LLMTAP_TEST_API_KEY", "sk-test"))
    items = list(body["input"])
    first = client.responses.create(
        model=body["model"], input=items, tools=body["tools"], tool_choice=body["tool_choice"])
    asked = [o for o in first.output if o.type == "function_call"]
    for call in asked:
        items.append({"type": "function_call", "call_id": call.call_id, "name": call.name,
                      "arguments": call.arguments})
        result = run_tool(TOOLS, call.name, json.loads(call.arguments))
        items.append({"type": "function_call_output", "call_id": call.call_id, "output": result})
    second = client.responses.create(model=body["model"], input=items, tools=body["tools"])
    return [c.name for c in asked], second.output_text


def anthropic(body):
    from anthropic import Anthropic
    client = Anthropic(api_key=os.environ.get("LLMTAP_TEST_API_KEY", "sk-ant-test"))
    messages = list(body["messages"])
    first = client.messages.create(model=body["model"], max_tokens=body["max_tokens"],
                                   messages=messages, tools=body["tools"])
    asked = [b for b in first.content if b.type == "tool_use"]
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                      for b in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": b.id,
         "content": run_tool(ANTHROPIC_TOOLS, b.name, b.input)} for b in asked]})
    second = client.messages.create(model=body["model"], max_tokens=body["max_tokens"],
                                    messages=messages, tools=body["tools"])
    return [b.name for b in asked], "".join(b.text for b in second.content if b.type == "text")


def main():
    api, cassette = sys.argv[1], sys.argv[2]
    with open(cassette) as f:
        body = json.loads(json.load(f)["request"]["body"])
    names, answer = {"chat": chat, "responses": responses, "anthropic": anthropic}[api](body)
    print("tools", ",".join(names))
    print("answer", answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
