"""One peer summarizer on one document, for bench/bench_squality.py.

Runs under the peers' own virtualenv (.venv-peers: langchain-classic,
langchain-openai, llama-index-core, llama-index-llms-openai-like), never the
project's. Reads one JSON request on stdin:

    {"method": "map_reduce" | "refine" | "tree_summarize", "chunks": [...],
     "base_url": "http://127.0.0.1:PORT/v1", "model": "...", "words": 585,
     "max_tokens": 900, "context_window": 8192}

and prints one JSON line: summary, calls, prompt_tokens, completion_tokens,
wall_s (the chain alone, imports excluded), error (or null).

The chunks are the ones longsum cut (same tokenizer, same 2,048-token
budget), so every method reads the same pieces. Calls and tokens are counted
from the server's `usage` field on every chat completion, by an httpx
transport under the OpenAI client that both libraries use.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import httpx


class Counting(httpx.HTTPTransport):
    """Counts chat completions and the server's token usage."""

    def __init__(self):
        super().__init__()
        self.calls = self.prompt = self.completion = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/chat/completions"):
            self.calls += 1
            response.read()
            try:
                usage = json.loads(response.content).get("usage") or {}
            except ValueError:
                usage = {}
            self.prompt += int(usage.get("prompt_tokens") or 0)
            self.completion += int(usage.get("completion_tokens") or 0)
        return response


def budget_sentence(words: int) -> str:
    return f"Use at most {words} words."


def langchain(req: dict, client: httpx.Client) -> str:
    from langchain_classic.chains.summarize import load_summarize_chain
    from langchain_classic.chains.summarize import map_reduce_prompt, refine_prompts
    from langchain_core.documents import Document
    from langchain_core.prompts import PromptTemplate
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=req["model"], base_url=req["base_url"], api_key="none", temperature=0, http_client=client,
        max_retries=0, timeout=1800,
        # langchain-openai sends max_tokens as max_completion_tokens, which llama-cpp-python's server
        # ignores: the server reads max_tokens from the body.
        extra_body={"max_tokens": req["max_tokens"]},
    )
    docs = [Document(page_content=c) for c in req["chunks"]]
    budget = budget_sentence(req["words"])
    if req["method"] == "map_reduce":
        # The shipped prompts; the final (combine) step is told the word budget.
        combine = PromptTemplate.from_template(
            map_reduce_prompt.PROMPT.template.replace("CONCISE SUMMARY:", f"{budget}\n\nCONCISE SUMMARY:"))
        chain = load_summarize_chain(llm, chain_type="map_reduce", map_prompt=map_reduce_prompt.PROMPT,
                                     combine_prompt=combine, token_max=req["context_window"] - req["max_tokens"] - 512)
    else:
        refine = PromptTemplate.from_template(refine_prompts.REFINE_PROMPT.template + f"\n{budget}")
        question = PromptTemplate.from_template(
            refine_prompts.PROMPT.template.replace("CONCISE SUMMARY:", f"{budget}\n\nCONCISE SUMMARY:"))
        chain = load_summarize_chain(llm, chain_type="refine", question_prompt=question, refine_prompt=refine)
    out = chain.invoke({"input_documents": docs})
    return out["output_text"]


def tree_summarize(req: dict, client: httpx.Client) -> str:
    from llama_index.core import Settings
    from llama_index.core.response_synthesizers import TreeSummarize
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model=req["model"], api_base=req["base_url"], api_key="none", temperature=0,
        max_tokens=req["max_tokens"], context_window=req["context_window"], is_chat_model=True,
        is_function_calling_model=False, http_client=client, max_retries=0, timeout=1800,
    )
    Settings.llm = llm
    synthesizer = TreeSummarize(llm=llm, use_async=False)
    query = f"Summarize the story. {budget_sentence(req['words'])}"
    return str(synthesizer.get_response(query, req["chunks"]))


def offline_tiktoken() -> None:
    """LangChain counts tokens with tiktoken's cl100k, which it downloads on
    first use; llama-index-core ships that file: use its copy (offline)."""
    spec = importlib.util.find_spec("llama_index.core")
    if spec and spec.origin:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR",
                              os.path.join(os.path.dirname(spec.origin), "_static", "tiktoken_cache"))


def main() -> None:
    offline_tiktoken()
    req = json.loads(sys.stdin.read())
    transport = Counting()
    client = httpx.Client(transport=transport, timeout=1800)
    run = tree_summarize if req["method"] == "tree_summarize" else langchain
    started = time.perf_counter()
    summary, error = "", None
    try:
        summary = run(req, client)
    except Exception as exc:  # a peer's failure is a result: reported, not raised
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    wall = time.perf_counter() - started
    print(json.dumps({"summary": summary, "calls": transport.calls, "prompt_tokens": transport.prompt,
                      "completion_tokens": transport.completion, "wall_s": wall, "error": error}))


if __name__ == "__main__":
    main()
