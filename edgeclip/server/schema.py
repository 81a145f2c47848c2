"""The request and response shapes, as pydantic models: the app's OpenAPI document is made from them.

Requests follow Jina's jina-clip-v2 API (and OpenAI's `encoding_format`); fields other clients add
(`user`, ...) are ignored, as OpenAI-compatible servers do."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

EmbeddingType = Literal["float", "base64", "binary", "ubinary"]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextInput(_Item):
    text: str = Field(description="a text to embed")


class ImageInput(_Item):
    image: str = Field(description="an image: an http(s) URL (with --fetch-urls), a data: URI, or base64 bytes")


class UrlInput(_Item):
    url: str = Field(description="older form of `image` (sent by LangChain and LlamaIndex): a URL or data: URI")


class BytesInput(_Item):
    bytes: str = Field(description="older form of `image` (sent by LangChain and LlamaIndex): base64 image bytes")


InputItem = Union[str, TextInput, ImageInput, UrlInput, BytesInput]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field("jina-clip-v2", description="jina-clip-v2, jinaai/jina-clip-v2, or the bundle's name")
    input: Union[str, list[InputItem]] = Field(description="a text, or a list of texts and image/text objects")
    embedding_type: Union[EmbeddingType, list[EmbeddingType], None] = Field(
        None, description="float (default), base64 (little-endian float32), binary (int8 of packed sign bits), "
                          "ubinary (uint8 of packed sign bits), or a list of them")
    encoding_type: Union[EmbeddingType, list[EmbeddingType], None] = Field(None, description="alias of embedding_type")
    encoding_format: Union[Literal["float", "base64"], None] = Field(None, description="OpenAI's name for it")
    dimensions: Union[StrictInt, StrictStr, None] = Field(None, description="1-1024 (an int or a numeric string): keep the "
                                              "first N dimensions, then L2-normalize (Matryoshka)")
    normalized: bool = Field(True, description="L2-normalize the embeddings")
    task: Union[str, None] = Field(None, description="retrieval.query adds the query instruction to texts; "
                                   "null and the other task names embed texts as they are")
    truncate: bool = Field(False, description="cut texts longer than the token limit instead of answering 422")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    image_tokens: int = Field(description="4,000 per 512x512 tile of each image, partial tiles counted")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], list[int], str, dict[str, Union[list[float], list[int], str]]]


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: Usage


class FieldError(BaseModel):
    field: str
    input: object = None
    message: str
    type: str


class OpenAIError(BaseModel):
    message: str = Field(description="the same text as `detail`")
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error or server_error")
    param: Union[str, None] = Field(None, description="the first field at fault, if any")
    code: str = Field(description="the same as the top-level `code`")


class ErrorBody(BaseModel):
    """Jina's error fields and OpenAI's `error` object, in one body."""

    detail: str
    code: str
    request_id: str
    errors: Union[list[FieldError], None] = None
    error: OpenAIError


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# The app parses the body itself (off the event loop when large), so the request model is declared to
# the OpenAPI document here instead of through a FastAPI body parameter.
_REF = "#/components/schemas/{model}"


def request_body_openapi() -> dict[str, object]:
    schema = {"$ref": _REF.format(model="EmbeddingsRequest")}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def request_schemas() -> dict[str, object]:
    """EmbeddingsRequest and the item models it refers to, for the document's components."""
    schema = EmbeddingsRequest.model_json_schema(ref_template=_REF)
    return {**schema.pop("$defs", {}), "EmbeddingsRequest": schema}
