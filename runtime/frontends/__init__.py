"""The APIs the gateway serves besides chat completions, each translated to and from the
chat-completions form its pipeline runs on (routing, fallback, limits, records, costs):
`responses` (OpenAI's Responses API) and `messages` (Anthropic's Messages API). The
interface they implement is in runtime/frontends/base.py."""
