#!/usr/bin/env python3
"""Writes a test ChatGPT-login auth.json for Codex CLI and prints its access token.

usage: make_auth.py AUTH_JSON_PATH [ACCOUNT_ID]

The tokens are unsigned JWTs that only the mock accepts. The access token's `exp` is 30 days
ahead and `last_refresh` is now, so Codex never tries to refresh it (it refreshes when `exp` has
passed, or after a 401); tests also point CODEX_REFRESH_TOKEN_URL_OVERRIDE at the mock.
"""
import base64
import datetime
import json
import sys
import time


def b64(doc):
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def jwt(claims):
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + ".dGVzdC1zaWduYXR1cmU"


def main():
    path = sys.argv[1]
    account = sys.argv[2] if len(sys.argv) > 2 else "acct-test-0001"
    auth = {"chatgpt_account_id": account, "chatgpt_plan_type": "plus",
            "chatgpt_user_id": "user-test-0001"}
    exp = int(time.time()) + 30 * 86400
    access = jwt({"exp": exp, "https://api.openai.com/auth": auth, "email": "dev@example.test"})
    id_token = jwt({"exp": exp, "email": "dev@example.test", "https://api.openai.com/auth": auth})
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None,
           "tokens": {"id_token": id_token, "access_token": access,
                      "refresh_token": "rt-test-not-real", "account_id": account},
           "last_refresh": now}
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    print(access)


if __name__ == "__main__":
    main()
