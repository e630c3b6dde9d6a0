"""``OpenAIEmbeddingFunction`` (chromadb's parameters and stored config, over httpx) against a fake
OpenAI endpoint on 127.0.0.1: batching, retries, errors, and a collection that reopens from its
stored config."""

from __future__ import annotations

import numpy as np
import pytest

import retrieval
from embedders.errors import ConfigError, ModelUnavailableError
from retrieval.utils.embedding_functions import OpenAIEmbeddingFunction
from tests.openai_fake import KEY, FakeOpenAI, vector

# chromadb 1.5.9's OpenAIEmbeddingFunction.get_config() keys (chromadb/utils/embedding_functions/
# openai_embedding_function.py; its class needs the openai package, absent here).
CHROMADB_CONFIG_KEYS = {"api_key_env_var", "model_name", "organization_id", "api_base", "api_type", "api_version",
                        "deployment_id", "default_headers", "dimensions"}


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("MY_OPENAI_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI() as server:
        yield server


def make(fake, **kwargs) -> OpenAIEmbeddingFunction:
    return OpenAIEmbeddingFunction(api_base=fake.url, api_key_env_var="MY_OPENAI_KEY", **kwargs)


def test_embeds_in_batches_in_input_order(fake):
    ef = make(fake, model_name="nomic-embed-text")
    ef.set_runtime_options(batch_size=2)
    texts = ["one", "two", "three", "four", "five"]
    out = ef(texts)
    assert [v.tolist() for v in out] == [pytest.approx(vector(t)) for t in texts]
    assert all(v.dtype == np.float32 for v in out)
    assert [r["json"]["input"] for r in fake.requests] == [["one", "two"], ["three", "four"], ["five"]]
    first = fake.requests[0]
    assert first["path"] == "/v1/embeddings" and first["headers"]["Authorization"] == f"Bearer {KEY}"
    assert first["json"]["model"] == "nomic-embed-text" and "dimensions" not in first["json"]


def test_dimensions_are_asked_for(fake):
    out = make(fake, model_name="text-embedding-3-small", dimensions=4)(["a"])
    assert out[0].shape == (4,) and fake.requests[0]["json"]["dimensions"] == 4


def test_retries_429_and_5xx_then_gives_up_clearly(fake):
    ef = make(fake)
    fake.fail = [503, 429]
    assert len(ef(["a"])) == 1 and len(fake.requests) == 3
    ef.set_runtime_options(max_retries=1)
    fake.fail = [500, 502]
    with pytest.raises(ModelUnavailableError, match=r"HTTP 502: try again"):
        ef(["a"])
    assert len(fake.requests) == 5


def test_a_missing_key_names_the_variable(fake, monkeypatch):
    monkeypatch.delenv("MY_OPENAI_KEY")
    ef = make(fake)  # constructing works: a collection opens for reading without the key
    with pytest.raises(ConfigError, match=r"MY_OPENAI_KEY environment variable is not set \(export MY_OPENAI_KEY"):
        ef(["a"])
    assert fake.requests == []


def test_a_refused_key_and_other_errors_are_not_retried(fake, monkeypatch):
    monkeypatch.setenv("MY_OPENAI_KEY", "sk-wrong")
    with pytest.raises(ConfigError, match=r"refused the API key from MY_OPENAI_KEY \(HTTP 401: Incorrect API key"):
        make(fake)(["a"])
    assert len(fake.requests) == 1


def test_unreachable_endpoint_says_so(monkeypatch):
    monkeypatch.setenv("MY_OPENAI_KEY", KEY)
    with FakeOpenAI() as gone:
        url = gone.url
    ef = OpenAIEmbeddingFunction(api_base=url, api_key_env_var="MY_OPENAI_KEY", max_retries=0)
    with pytest.raises(ModelUnavailableError, match="could not reach the embeddings endpoint"):
        ef(["a"])


def test_azure_deployment_route(fake):
    ef = OpenAIEmbeddingFunction(api_type="azure", api_base=fake.url, api_version="2024-02-01", deployment_id="emb",
                                 api_key_env_var="MY_OPENAI_KEY")
    ef(["a"])
    request = fake.requests[0]
    assert request["path"] == "/v1/openai/deployments/emb/embeddings?api-version=2024-02-01"
    assert request["headers"]["api-key"] == KEY
    with pytest.raises(ConfigError, match="needs api_version, deployment_id"):
        OpenAIEmbeddingFunction(api_type="azure", api_base=fake.url)


def test_config_is_chromadb_s_and_holds_no_secret(fake):
    with pytest.warns(DeprecationWarning, match="will not be persisted"):
        ef = make(fake, api_key="sk-given", model_name="text-embedding-3-large", dimensions=256)
    config = ef.get_config()
    assert set(config) == CHROMADB_CONFIG_KEYS and "sk-given" not in str(config)
    assert OpenAIEmbeddingFunction.name() == "openai" and ef.default_space() == "cosine"
    with pytest.raises(ConfigError, match="model_name cannot change"):
        ef.validate_config_update(config, {"model_name": "other"})
    ef.validate_config_update(config, {"api_base": "http://elsewhere/v1"})  # moving the endpoint is fine


def test_a_collection_reopens_with_its_stored_function(fake, tmp_path):
    path = str(tmp_path / "db")
    client = retrieval.PersistentClient(path=path)
    col = client.create_collection("docs", embedding_function=make(fake, model_name="text-embedding-3-small"))
    col.add(ids=["a", "b"], documents=["red circle", "blue star"])
    stored = col.configuration_json["embedding_function"]
    assert stored["name"] == "openai" and stored["config"]["api_key_env_var"] == "MY_OPENAI_KEY"
    client.close()
    reopened = retrieval.PersistentClient(path=path).get_collection("docs")
    assert reopened.query(query_texts=["blue star"], n_results=1)["ids"] == [["b"]]
    assert fake.requests[-1]["json"]["input"] == ["blue star"]
