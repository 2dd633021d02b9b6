#!/usr/bin/env python3
"""One call with the official Anthropic Python SDK, configured the way its users do it: the base
URL and credentials come from the environment (ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY or
ANTHROPIC_AUTH_TOKEN, ANTHROPIC_CUSTOM_HEADERS). Prints one JSON object describing the outcome;
scripts/e2e/checks.py judges it. Retries are off so an error surfaces on the first answer.

Usage: client_sdk.py plain|stream|tool|ratelimit|overloaded|count|models|beta|nocred
"""

import json
import sys
import warnings

import anthropic

MODEL = "claude-sonnet-4-5-20250929"
HI = [{"role": "user", "content": "say hi"}]
TOOLS = [{"name": "get_weather", "description": "Current weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]


def usage(u):
    return {k: getattr(u, k, None) for k in
            ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")}


def text_of(msg):
    return "".join(b.text for b in msg.content if b.type == "text")


def main(scenario):
    # The SDK warns about dated model ids; the mock does not care which model is asked for.
    warnings.simplefilter("ignore", DeprecationWarning)
    if scenario == "nocred":
        # No credential at all: the SDK needs to be told that this is on purpose.
        client = anthropic.Anthropic(max_retries=0, default_headers={"Authorization": anthropic.omit})
    else:
        client = anthropic.Anthropic(max_retries=0)
    out = {"sdk": "python", "version": anthropic.__version__, "scenario": scenario}
    try:
        if scenario in ("plain", "nocred"):
            msg = client.messages.create(model=MODEL, max_tokens=64, messages=HI)
            out.update(text=text_of(msg), usage=usage(msg.usage), model=msg.model)
        elif scenario == "stream":
            with client.messages.stream(model=MODEL, max_tokens=64, messages=HI) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            out.update(text=text, usage=usage(final.usage), model=final.model)
        elif scenario == "tool":
            with client.messages.stream(model=MODEL, max_tokens=256, tools=TOOLS, messages=[
                    {"role": "user", "content": "What is the weather in Paris? e2e:tool"}]) as stream:
                final = stream.get_final_message()
            tools = [{"name": b.name, "input": b.input} for b in final.content if b.type == "tool_use"]
            out.update(text=text_of(final), tool_use=tools, stop_reason=final.stop_reason,
                       usage=usage(final.usage))
        elif scenario in ("ratelimit", "overloaded"):
            marker = "e2e:429" if scenario == "ratelimit" else "e2e:529"
            client.messages.create(model=MODEL, max_tokens=64,
                                   messages=[{"role": "user", "content": "hi " + marker}])
            out.update(error=None)
        elif scenario == "count":
            res = client.messages.count_tokens(model=MODEL, messages=HI)
            out.update(input_tokens=res.input_tokens)
        elif scenario == "models":
            out.update(models=[m.id for m in client.models.list()])
        elif scenario == "beta":
            # The beta namespace: an anthropic-beta header on the same endpoint.
            msg = client.beta.messages.create(model=MODEL, max_tokens=64, messages=HI,
                                              betas=["context-management-2025-06-27"])
            out.update(text=text_of(msg), usage=usage(msg.usage))
        else:
            raise SystemExit("unknown scenario " + scenario)
    except anthropic.APIStatusError as e:
        out.update(error=type(e).__name__, status=e.status_code,
                   retry_after=e.response.headers.get("retry-after"),
                   error_type=(e.body or {}).get("error", {}).get("type") if isinstance(e.body, dict) else None)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
