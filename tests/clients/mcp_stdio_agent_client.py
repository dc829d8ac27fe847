#!/usr/bin/env python3
"""A two-turn tool-calling agent on the official `openai` SDK whose tools are served by an MCP
server over stdio (tests/clients/mcp_stdio_server.py, spawned by the `mcp` SDK's Client).

Usage: mcp_stdio_agent_client.py FIRST_TURN_CASSETTE

Sends the first turn's recorded request through the SDK, then opens the MCP session and calls
every tool the model asked for on the server, sends the results back in the same conversation,
and prints `tools NAMES` then `answer TEXT`. The SDK calls https://api.openai.com; the test
harness sends that name to the replay server (see sdk_client.py).
"""
import asyncio
import json
import os
import sys

from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from openai import OpenAI

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_stdio_server.py")


async def main():
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
    params = StdioServerParameters(command=sys.executable, args=[SERVER])
    async with Client(params) as tools:
        for call in asked:
            arguments = json.loads(call.function.arguments)
            result = await tools.call_tool(call.function.name, {"location": arguments["location"]})
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": result.content[0].text})
    second = client.chat.completions.create(
        model=body["model"], messages=messages, tools=body["tools"], stream=False)
    print("tools", ",".join(t.function.name for t in asked))
    print("answer", second.choices[0].message.content)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
