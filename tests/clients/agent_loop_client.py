#!/usr/bin/env python3
"""A two-turn tool-calling agent on the official `openai` SDK, with real local tools.

Usage: agent_loop_client.py FIRST_TURN_CASSETTE

Sends the first turn's recorded request (model, messages, tools) through the SDK, runs every
tool the model asks for as a child process (`sh -c`, pausing before it prints its result, so a
tool takes time as real ones do), sends the results back in the same conversation, and prints
`tools NAMES` then `answer TEXT`. The SDK calls https://api.openai.com; the test harness sends
that name to the replay server (see sdk_client.py).
"""
import json
import os
import subprocess
import sys

from openai import OpenAI

# What each tool runs: its first argument is the location the model asked about.
TOOLS = {
    "get_weather": 'sleep 0.3; echo "weather $0: 18C, sunny"',
    "get_news": 'sleep 0.2; echo "news $0: cable cars run late tonight"',
}


def main():
    with open(sys.argv[1]) as f:
        body = json.loads(json.load(f)["request"]["body"])
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
        location = json.loads(call.function.arguments)["location"]
        result = subprocess.run(["sh", "-c", TOOLS[call.function.name], location],
                                capture_output=True, text=True, check=True).stdout.strip()
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    second = client.chat.completions.create(
        model=body["model"], messages=messages, tools=body["tools"], stream=False)
    print("tools", ",".join(t.function.name for t in asked))
    print("answer", second.choices[0].message.content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
