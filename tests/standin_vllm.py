"""A stand-in for the `vllm` executable (tests put a `vllm` that runs this on PATH): it records
its command line, answers as `vllm serve` does on the routes selfcorrect uses (/v1/models,
/health, /v1/load_lora_adapter, /v1/unload_lora_adapter) and forwards each chat completion to
a real llama.cpp server (STANDIN_UPSTREAM), so that the rounds' draws are real. A request for
a model name it was not started with, nor loaded, gets vLLM's 404. Runtime LoRA loading is
refused unless VLLM_ALLOW_RUNTIME_LORA_UPDATING is true, as vLLM refuses it."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> None:
    record = os.environ["STANDIN_RECORD"]
    with open(record, "a") as f:
        f.write(json.dumps({"argv": argv}) + "\n")
    assert argv[0] == "serve", argv
    model, options = argv[1], argv[2:]
    port = int(options[options.index("--port") + 1])
    names = {options[options.index("--served-model-name") + 1] if "--served-model-name" in options else model}
    lora = "--enable-lora" in options
    upstream = os.environ["STANDIN_UPSTREAM"].rstrip("/")
    runtime = os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower() in ("1", "true")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            sys.stderr.write("%s %s\n" % (self.command, self.path))

        def _reply(self, status: int, body: dict | str) -> None:
            raw = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/health":
                return self._reply(200, "")
            if self.path == "/v1/models":
                return self._reply(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in sorted(names)]})
            self._reply(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            if self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                with open(record, "a") as f:
                    f.write(json.dumps({"call": self.path, "body": body, "port": port}) + "\n")
                if not (lora and runtime):
                    return self._reply(404 if not runtime else 400, {"error": "runtime LoRA updating is off"})
                (names.add if "unload" not in self.path else names.discard)(body["lora_name"])
                return self._reply(200, f"Success: LoRA adapter '{body['lora_name']}' done")
            if self.path != "/v1/chat/completions":
                return self._reply(404, {"detail": "Not Found"})
            if body.get("model") not in names:
                return self._reply(404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                                   "type": "NotFoundError", "code": 404}})
            with open(record, "a") as f:
                f.write(json.dumps({"call": "chat", "model": body["model"], "port": port}) + "\n")
            body["model"] = os.environ.get("STANDIN_UPSTREAM_MODEL", body["model"])  # the name upstream answers to
            request = urllib.request.Request(upstream + "/chat/completions", data=json.dumps(body).encode(),
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as answer:
                self._reply(answer.status, json.loads(answer.read()))

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
