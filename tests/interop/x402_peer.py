"""The official x402 Python SDK (pinned in scripts/requirements-interop.txt) as a test peer of
the sidecar, driven by tests/interop.rs on the devnet. Three roles:

  client       pay one paid route with x402Client (v2 PAYMENT-SIGNATURE, or --v1: X-PAYMENT
               built from the 402's v1 body) and print one JSON line: the status, the decoded
               receipt header and the body
  facilitator  the SDK's x402Facilitator with its web3.py signer, served over HTTP
               (POST /verify, POST /settle, GET /supported), settling with its own key
  seller       a FastAPI resource server with the SDK's payment_middleware on POST /x402, whose
               facilitator is an HTTP one (the official facilitator above, or the sidecar's)
  check        import everything the roles use and print the SDK's version (setup's smoke test)

Keys come from environment variables, never from the command line. Nothing in the SDK is
patched: every role only configures it.
"""

import argparse
import asyncio
import json
import os
import sys


def _key(env):
    key = os.environ.get(env)
    if not key:
        sys.exit(f"x402_peer: set {env} to the private key")
    return key


# ---------------------------------------------------------------------------------------------
# client


async def run_client(args):
    import httpx
    from eth_account import Account
    from x402 import x402Client
    from x402.http import decode_payment_response_header, x402HTTPClient
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm import EthAccountSigner
    from x402.mechanisms.evm.exact import register_exact_evm_client

    signer = EthAccountSigner(Account.from_key(_key(args.key_env)))
    client = register_exact_evm_client(x402Client(), signer)
    body = open(args.body, "rb").read() if args.body else b"{}"
    headers = {"Content-Type": "application/json"}

    if args.v1:
        # v1: the 402's JSON body is the offer; the SDK signs it and names the header.
        http = x402HTTPClient(client)
        async with httpx.AsyncClient(timeout=30, trust_env=False) as plain:
            first = await plain.post(args.url, content=body, headers=headers)
            if first.status_code != 402:
                return _print(first, None)
            offer = http.get_payment_required_response(lambda _name: None, first.json())
            payload = await http.create_payment_payload(offer)
            paid_headers = dict(headers, **http.encode_payment_signature_header(payload))
            resp = await plain.post(args.url, content=body, headers=paid_headers)
    else:
        async with x402HttpxClient(client, timeout=30, trust_env=False) as paying:
            resp = await paying.post(args.url, content=body, headers=headers)

    receipt = None
    for name in ("PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE"):
        value = resp.headers.get(name)
        if value:
            receipt = decode_payment_response_header(value).model_dump(by_alias=True)
            receipt["header"] = name
            break
    return _print(resp, receipt)


def _print(resp, receipt):
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    print(json.dumps({"status": resp.status_code, "receipt": receipt, "body": body}))
    return 0


# ---------------------------------------------------------------------------------------------
# facilitator


def facilitator_app(args):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from x402 import x402Facilitator
    from x402.mechanisms.evm import FacilitatorWeb3Signer
    from x402.mechanisms.evm.exact import register_exact_evm_facilitator
    from x402.schemas import parse_payment_payload, parse_payment_requirements

    signer = FacilitatorWeb3Signer(private_key=_key(args.key_env), rpc_url=args.rpc_url)
    facilitator = register_exact_evm_facilitator(
        x402Facilitator(), signer, networks=args.network
    )
    app = FastAPI()

    def parse(body):
        payload = parse_payment_payload(body["paymentPayload"])
        requirements = parse_payment_requirements(
            payload.x402_version, body["paymentRequirements"]
        )
        return payload, requirements

    async def answer(request, action):
        try:
            payload, requirements = parse(await request.json())
        except Exception as e:  # noqa: BLE001 - a malformed request is the caller's fault
            return JSONResponse({"error": f"invalid request: {type(e).__name__}"}, 400)
        result = await action(payload, requirements)
        return JSONResponse(result.model_dump(by_alias=True, exclude_none=True))

    @app.post("/verify")
    async def verify(request: Request):
        return await answer(request, facilitator.verify)

    @app.post("/settle")
    async def settle(request: Request):
        return await answer(request, facilitator.settle)

    @app.get("/supported")
    async def supported():
        return JSONResponse(facilitator.get_supported().model_dump(by_alias=True, exclude_none=True))

    return app


# ---------------------------------------------------------------------------------------------
# seller


def seller_app(args):
    from fastapi import FastAPI
    from x402 import x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.http.middleware.fastapi import payment_middleware
    from x402.mechanisms.evm.exact import register_exact_evm_server

    facilitator = HTTPFacilitatorClient(FacilitatorConfig(url=args.facilitator_url))
    server = register_exact_evm_server(x402ResourceServer(facilitator), args.network)
    routes = {
        "POST /x402": {
            "accepts": {
                "scheme": "exact",
                "payTo": args.pay_to,
                "price": args.price,
                "network": args.network,
                "maxTimeoutSeconds": 120,
            },
            "description": "Trading strategy advice",
        }
    }
    app = FastAPI()
    paywall = payment_middleware(routes, server)

    @app.middleware("http")
    async def x402(request, call_next):
        return await paywall(request, call_next)

    @app.post("/x402")
    async def advice():
        return _strategy("official-python-seller")

    return app


def _strategy(model):
    """A fixed, labelled strategy answer (the shape the sidecar's buyer passes on)."""
    return {
        "strategy": {
            "summary": "INTEROP TEST ANSWER: hold",
            "steps": [],
            "riskNotes": ["A fixed answer of an interop test peer, not trading advice."],
            "actions": [],
            "confidence": 0.0,
        },
        "metadata": {"model": model},
    }


# ---------------------------------------------------------------------------------------------


def discovery(args):
    """Validate a seller's discovery documents with the official SDK's bazaar validators and
    JSON Schema (draft 2020-12): prints one JSON report line."""
    import jsonschema
    from x402.extensions.bazaar.facilitator import (
        validate_discovery_extension,
        validate_discovery_extension_spec,
    )
    from x402.extensions.bazaar.types import parse_discovery_extension

    with open(args.file) as f:
        doc = json.load(f)
    report = {"bazaar": [], "openapi": []}
    for ext in doc["bazaar"]:
        errors = []
        parsed = parse_discovery_extension(ext)
        r = validate_discovery_extension(parsed)
        errors += [] if r.valid else r.errors
        r = validate_discovery_extension_spec(ext)
        errors += [] if r.valid else r.errors
        report["bazaar"].append({"kind": type(parsed).__name__, "errors": errors})
    api = doc["openapi"]
    errors = []
    if not str(api.get("openapi", "")).startswith("3.1"):
        errors.append("openapi is not 3.1.x")
    for path, ops in api.get("paths", {}).items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            if not op.get("responses"):
                errors.append(f"{where}: no responses")
            for status, resp in op.get("responses", {}).items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and "$ref" not in schema:
                    try:
                        jsonschema.Draft202012Validator.check_schema(schema)
                    except jsonschema.SchemaError as e:
                        errors.append(f"{where} {status}: {e.message}")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                try:
                    jsonschema.Draft202012Validator.check_schema(body["schema"])
                    jsonschema.validate(body["example"], body["schema"])
                except jsonschema.exceptions.ValidationError as e:
                    errors.append(f"{where} example: {e.message}")
                except jsonschema.SchemaError as e:
                    errors.append(f"{where} requestBody: {e.message}")
    report["openapi"] = errors
    print(json.dumps(report))


def check():
    from importlib.metadata import version

    import fastapi  # noqa: F401
    import httpx  # noqa: F401
    import uvicorn  # noqa: F401
    import x402.http.clients  # noqa: F401
    import x402.http.middleware.fastapi  # noqa: F401
    import x402.mechanisms.evm  # noqa: F401
    import x402.mechanisms.evm.exact  # noqa: F401
    import jsonschema  # noqa: F401

    print(f"x402 {version('x402')}")


def main():
    p = argparse.ArgumentParser(prog="x402_peer")
    sub = p.add_subparsers(dest="role", required=True)

    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--body")
    c.add_argument("--key-env", default="X402_PEER_KEY")
    c.add_argument("--v1", action="store_true")

    f = sub.add_parser("facilitator")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--rpc-url", required=True)
    f.add_argument("--network", default="eip155:84532")
    f.add_argument("--key-env", default="X402_PEER_KEY")

    s = sub.add_parser("seller")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--facilitator-url", required=True)
    s.add_argument("--pay-to", required=True)
    s.add_argument("--price", default="$0.01")
    s.add_argument("--network", default="eip155:84532")

    sub.add_parser("check")

    d = sub.add_parser("discovery")
    d.add_argument("--file", required=True)

    args = p.parse_args()
    if args.role == "check":
        return check()
    if args.role == "discovery":
        return discovery(args)
    if args.role == "client":
        sys.exit(asyncio.run(run_client(args)))
    import uvicorn

    app = facilitator_app(args) if args.role == "facilitator" else seller_app(args)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
