#!/usr/bin/env python3
"""One call through the official Python SDK for the Gemini API (google-genai), printing what the
SDK itself reports as JSON on stdout: {"text", "model_version", "usage": {prompt, candidates,
cached, thoughts, tool_use}} — for streams, the last chunk's usage_metadata (cumulative).

Usage: client_genai.py BASE_URL API_KEY MODE [MODEL] [HEADER=VALUE ...]
    MODE: generate | stream | count | embed | key-in-query | batch-get | batch-download
    key-in-query sends the key as `?key=` (no x-goog-api-key header), as some clients do.
    batch-get (`batches.get`, MODEL is the batch's name) and batch-download (`files.download`,
    MODEL is the responses file's name) print the usage of every response, summed, and how
    many responses carried one.
"""

import json
import sys
import urllib.request

from google import genai
from google.genai import types


def usage_of(meta):
    meta = meta or types.GenerateContentResponseUsageMetadata()
    return {
        "prompt": meta.prompt_token_count or 0,
        "candidates": meta.candidates_token_count or 0,
        "cached": meta.cached_content_token_count or 0,
        "thoughts": meta.thoughts_token_count or 0,
        "tool_use": meta.tool_use_prompt_token_count or 0,
    }


def summed(metas):
    usages = [usage_of(meta) for meta in metas]
    return {name: sum(usage[name] for usage in usages) for name in usage_of(None)}


def main():
    base_url, api_key, mode = sys.argv[1:4]
    model = sys.argv[4] if len(sys.argv) > 4 else "gemini-2.5-flash"
    headers = dict(arg.split("=", 1) for arg in sys.argv[5:])
    if mode == "key-in-query":
        # The SDK always sends the header; a plain request shows the query-parameter form.
        url = f"{base_url}/v1beta/models/{model}:generateContent?key={api_key}"
        body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
        request = urllib.request.Request(url, body, {"content-type": "application/json", **headers})
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = json.load(answer)
        meta = types.GenerateContentResponseUsageMetadata.model_validate(data["usageMetadata"])
        print(json.dumps({"text": "", "model_version": data.get("modelVersion"),
                          "usage": usage_of(meta)}))
        return
    client = genai.Client(api_key=api_key, http_options=types.HttpOptions(
        base_url=base_url, headers=headers))
    if mode == "generate":
        answer = client.models.generate_content(model=model, contents="Say hello.")
        result = {"text": answer.text, "model_version": answer.model_version,
                  "usage": usage_of(answer.usage_metadata)}
    elif mode == "stream":
        text, last, version = "", None, None
        for chunk in client.models.generate_content_stream(model=model, contents="Say hello."):
            text += chunk.text or ""
            last = chunk.usage_metadata or last
            version = chunk.model_version or version
        result = {"text": text, "model_version": version, "usage": usage_of(last)}
    elif mode == "count":
        answer = client.models.count_tokens(model=model, contents="Say hello.")
        result = {"total_tokens": answer.total_tokens, "usage": usage_of(None)}
    elif mode == "batch-get":
        job = client.batches.get(name=model)
        metas = [r.response.usage_metadata for r in job.dest.inlined_responses if r.response]
        result = {"state": job.state.name, "responses": len(metas), "usage": summed(metas)}
    elif mode == "batch-download":
        data = client.files.download(file=model)
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        metas = [types.GenerateContentResponseUsageMetadata.model_validate(line["response"]["usageMetadata"])
                 for line in lines if line.get("response")]
        result = {"lines": len(lines), "responses": len(metas), "usage": summed(metas)}
    elif mode == "embed":
        answer = client.models.embed_content(model=model, contents="Say hello.")
        result = {"dimensions": len(answer.embeddings[0].values), "usage": usage_of(None)}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
