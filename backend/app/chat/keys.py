"""Redis keys the tutor writes: read by /metrics without importing the tutor."""

# LLM tokens used, all workers together: field `<model>:prompt_tokens` / `<model>:completion_tokens`.
TOKENS_KEY = "taskwire:metrics:llm_tokens"
