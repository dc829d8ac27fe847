#!/usr/bin/env python3
"""Sends a recorded request through the official `openai` or `anthropic` Python SDK.

Usage: sdk_client.py CASSETTE [--http2] [--concurrent N]

The SDK is pointed at the recording's real base URL (https://api.openai.com/v1, ...): the test
harness runs this in a mount namespace whose /etc/hosts sends those names to the replay server,
and SSL_CERT_FILE makes the test CA trusted. The API key comes from LLMTAP_TEST_API_KEY (a planted
value the tests look for in llmtap's output). Prints what the application would see, one JSON
object per line (every streamed event, or the whole response), so runs with and without llmtap
can be compared byte for byte. Exits 3 on an API error (after printing it), like an application
that reports the failure.

--http2: an httpx client with HTTP/2 enabled (ALPN h2).
--base-url URL: call URL (e.g. http://127.0.0.1:8000, a local OpenAI-compatible server) instead
of the recording's scheme and host; the path prefix (/v1) is kept.
--concurrent N: N copies of the call at once on one client (with --http2: N streams multiplexed
on one connection); prints `id <response id>` per call instead of the events.
"""
import argparse
import asyncio
import inspect
import json
import os
import sys
from urllib.parse import parse_qs, urlsplit

OPENAI_ENDPOINTS = {
    "chat_completions": ("/chat/completions", ("chat", "completions")),
    "completions": ("/completions", ("completions",)),
    "embeddings": ("/embeddings", ("embeddings",)),
    "responses": ("/responses", ("responses",)),
}


def split_kwargs(method, body):
    """Known parameters as keyword arguments, the rest through `extra_body` (as the SDKs allow)."""
    params = inspect.signature(method).parameters
    known = {k: v for k, v in body.items() if k in params}
    extra = {k: v for k, v in body.items() if k not in params}
    if extra:
        known["extra_body"] = extra
    return known


def http_client(sdk, args, asynchronous):
    """The SDK's own default client (it trusts SSL_CERT_FILE), with HTTP/2 when asked."""
    if not args.http2:
        return None
    cls = sdk.DefaultAsyncHttpxClient if asynchronous else sdk.DefaultHttpxClient
    return cls(http2=True)


def make_client(cassette, args, asynchronous):
    key = os.environ.get("LLMTAP_TEST_API_KEY", "sk-test")
    url = urlsplit(cassette["request"]["url"])
    api = cassette["api"]
    if api == "anthropic_messages":
        import anthropic

        http = http_client(anthropic, args, asynchronous)
        cls = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
        client = cls(
            api_key=key, base_url=f"{url.scheme}://{url.netloc}", max_retries=0, http_client=http
        )
        return client, ("messages",)
    import openai

    http = http_client(openai, args, asynchronous)
    suffix, attrs = OPENAI_ENDPOINTS[api]
    if cassette["provider"] == "azure.ai.openai":
        cls = openai.AsyncAzureOpenAI if asynchronous else openai.AzureOpenAI
        version = parse_qs(url.query).get("api-version", ["2024-02-01"])[0]
        client = cls(
            api_key=key,
            azure_endpoint=f"{url.scheme}://{url.netloc}",
            api_version=version,
            max_retries=0,
            http_client=http,
        )
        return client, attrs
    path = url.path
    if not path.endswith(suffix):
        raise SystemExit(f"unexpected path {path} for {api}")
    cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    origin = args.base_url or f"{url.scheme}://{url.netloc}"
    client = cls(
        api_key=key,
        base_url=f"{origin}{path[: -len(suffix)]}",
        max_retries=0,
        http_client=http,
    )
    return client, attrs


def request_kwargs(cassette, method):
    body = json.loads(cassette["request"]["body"])
    if cassette["provider"] == "azure.ai.openai" and "model" not in body:
        # The deployment: the SDK puts `model` into /openai/deployments/{model}/.
        body["model"] = urlsplit(cassette["request"]["url"]).path.split("/")[3]
    kwargs = split_kwargs(method, body)
    headers = {k.lower(): v for k, v in cassette["request"]["headers"].items()}
    if "anthropic-beta" in headers:
        kwargs["extra_headers"] = {"anthropic-beta": headers["anthropic-beta"]}
    return kwargs


def resolve(client, attrs):
    method = client
    for attr in attrs:
        method = getattr(method, attr)
    return method.create


def dump(obj):
    return obj.to_json(indent=None) if hasattr(obj, "to_json") else json.dumps(obj)


def first_id(event):
    for candidate in (event, getattr(event, "message", None), getattr(event, "response", None)):
        value = getattr(candidate, "id", None)
        if value:
            return value
    return None


def sdk_error_type(cassette):
    # Import only the SDK in use: importing both costs seconds of start-up.
    if cassette["api"] == "anthropic_messages":
        import anthropic

        return anthropic.APIError
    import openai

    return openai.APIError


def run_once(cassette, args):
    client, attrs = make_client(cassette, args, asynchronous=False)
    create = resolve(client, attrs)
    try:
        result = create(**request_kwargs(cassette, create))
        if hasattr(result, "__iter__") and not hasattr(result, "to_json"):
            for event in result:
                print(dump(event), flush=True)
        else:
            print(dump(result), flush=True)
    except sdk_error_type(cassette) as e:
        print(f"API error: {type(e).__name__}: {getattr(e, 'status_code', None)} {e.body}")
        return 3
    return 0


async def run_concurrent(cassette, args):
    client, attrs = make_client(cassette, args, asynchronous=True)
    create = resolve(client, attrs)

    async def one():
        result = await create(**request_kwargs(cassette, create))
        if hasattr(result, "__aiter__"):
            got = None
            async for event in result:
                got = got or first_id(event)
            return got
        return first_id(result)

    ids = await asyncio.gather(*(one() for _ in range(args.concurrent)))
    for value in ids:
        print(f"id {value}")
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cassette")
    parser.add_argument("--http2", action="store_true")
    parser.add_argument("--concurrent", type=int, default=0)
    parser.add_argument("--base-url")
    args = parser.parse_args()
    with open(args.cassette) as f:
        cassette = json.load(f)
    if args.concurrent:
        return asyncio.run(run_concurrent(cassette, args))
    return run_once(cassette, args)


if __name__ == "__main__":
    sys.exit(main())
