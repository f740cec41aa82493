"""``/api/embed`` and ``/api/embeddings`` with Ollama's official Python client against a real
Siesta and the real llama-server on the tiny model, started with embeddings by its recipe;
and the 400 that names the recipe argument for a model started without them. Then the
embedding helpers (app/api/ollama/embed.py) on their own."""

from __future__ import annotations

import math

import pytest

from app.api.ollama.embed import (
    dimensions_of,
    embed_inputs,
    embeddings_hint,
    unit_length,
    vectors_of,
)
from app.api.ollama.translate import TranslationError
from app.core.models.model import ModelState
from app.demo_model import N_EMBD

ollama = pytest.importorskip("ollama")


@pytest.fixture
def recipes(write_recipe, tmp_path):
    from app.demo_model import write_tiny_model

    model = write_tiny_model(tmp_path / "models" / "tiny.gguf")
    args = '"-t", "1", "--ctx-size", "256"'
    write_recipe("emb", f'backend = "llamacpp"\nmodel = "{model}"\n'
                        f'args = [{args}, "--embeddings", "--pooling", "mean"]\n')
    write_recipe("tiny", f'backend = "llamacpp"\nmodel = "{model}"\nargs = [{args}]\n')


def _length(vector) -> float:
    return math.sqrt(sum(v * v for v in vector))


@pytest.mark.llama
@pytest.mark.timeout(120)
async def test_embed_and_the_older_embeddings(front_door, recipes):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)

    answer = await client.embed("emb", input=["why is the sky blue?", "why is the grass green?"])  # cold
    assert answer.model == "emb" and len(answer.embeddings) == 2
    assert all(len(v) == N_EMBD and _length(v) == pytest.approx(1.0) for v in answer.embeddings)
    assert answer.embeddings[0] != answer.embeddings[1]
    assert answer.prompt_eval_count > 0 and answer.total_duration >= answer.load_duration > 0

    one = await client.embed("emb:latest", input="why is the sky blue?", keep_alive="3m")
    assert one.embeddings == [pytest.approx(answer.embeddings[0])] and one.load_duration == 0
    assert manager.get("emb").effective_timeout() == (180.0, "request")
    short = await client.embed("emb", input="why is the sky blue?", dimensions=8)
    assert len(short.embeddings[0]) == 8 and _length(short.embeddings[0]) == pytest.approx(1.0)

    older = await client.embeddings("emb", prompt="why is the sky blue?")
    assert len(older.embedding) == N_EMBD and older.embedding != pytest.approx(answer.embeddings[0])  # not normalised

    await client.embed("emb", keep_alive=0)  # no input: load (then unload at once: keep_alive 0)
    assert (await client.embed("emb", input=[])).embeddings == []
    assert manager.get("emb").state is ModelState.READY
    assert (await client.embeddings("emb")).embedding == []


@pytest.mark.llama
@pytest.mark.timeout(120)
async def test_a_model_without_embeddings_names_the_recipe_argument(front_door, recipes):
    manager, http, url = await front_door()
    client = ollama.AsyncClient(host=url)
    for call in (lambda: client.embed("tiny", input="hi"), lambda: client.embeddings("tiny", prompt="hi")):
        with pytest.raises(ollama.ResponseError) as info:
            await call()
        assert info.value.status_code == 400
        assert "--embeddings" in info.value.error and "recipe" in info.value.error
    async with http.post(f"{url}/api/embed", json={"model": "emb", "input": ["a", 3]}) as resp:
        assert resp.status == 400 and await resp.json() == {"error": "invalid input type"}
    assert manager.get("emb").state is ModelState.UNLOADED  # refused before any load


def test_inputs_dimensions_and_unit_length():
    assert embed_inputs("a") == ["a"] and embed_inputs(["a", "b"]) == ["a", "b"]
    assert embed_inputs(None) == embed_inputs("") == embed_inputs([]) == []
    for bad in (3, ["a", None], {"text": "a"}):
        with pytest.raises(TranslationError, match="invalid input type"):
            embed_inputs(bad)
    assert dimensions_of(None) is None and dimensions_of(0) is None and dimensions_of(8) == 8
    with pytest.raises(TranslationError):
        dimensions_of("8")
    assert unit_length([3.0, 4.0]) == pytest.approx([0.6, 0.8]) and unit_length([0.0, 0.0]) == [0.0, 0.0]


def test_vectors_in_input_order_and_what_is_not_an_answer():
    payload = {"data": [{"index": 1, "embedding": [0.0, 1]}, {"index": 0, "embedding": [1, 0.5]}],
               "usage": {"prompt_tokens": 7}}
    assert vectors_of(payload, 2) == ([[1.0, 0.5], [0.0, 1.0]], 7)
    assert vectors_of({"data": [{"embedding": [1]}]}, 1) == ([[1.0]], 0)
    for bad in ({"data": []}, {"data": [{"embedding": "AAAA"}]}, {"data": [{"embedding": [True]}]}, []):
        with pytest.raises(ValueError):
            vectors_of(bad, 1)


def test_hints_name_what_to_put_in_the_recipe():
    disabled = (b'{"error": {"code": 501, "message": "This server does not support embeddings. '
                b'Start it with `--embeddings`"}}')
    assert '"--embeddings"' in embeddings_hint("tiny", 501, disabled)
    pooling = b'{"error": {"code": 400, "message": "Pooling type \'none\' is not OAI compatible."}}'
    assert '"--pooling", "mean"' in embeddings_hint("tiny", 400, pooling)
    assert embeddings_hint("tiny", 500, b"{}") == ""
