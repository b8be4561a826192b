"""tunesmith: tailor an open chat LLM with LoRA to play a character or follow a strict format, and prove it worked."""

from tunesmith.conversation import Conversation, Message
from tunesmith.errors import TunesmithError

__version__ = "0.1.0"
__all__ = ["Conversation", "Message", "TunesmithError", "__version__"]
