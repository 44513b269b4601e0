"""Tiny real models for generation tests: random weights from a small Llama config, the real SmolLM2 tokenizer
(with its chat template), and a LoRA adapter on top. Built once per test session.

Django is imported only to find the default model's folder when no tokenizer is given, so bench/gpu_check.py (which
runs without Django) builds the same models."""


def build_tiny_model(folder, seed: int = 0, tokenizer_dir=None):
    """The tokenizer comes from ``tokenizer_dir``, by default the default model's folder (built under MODELS_DIR)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or _default_model_folder())
    torch.manual_seed(seed)
    config = LlamaConfig(
        # head_dim 64: the smallest attention head vLLM's CPU kernels accept.
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
        num_key_value_heads=1, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _default_model_folder():
    from django.conf import settings

    from generation.backends import default_model
    from generation.services import DEFAULT_MODEL_NAME

    return default_model.build(settings.MODELS_DIR / DEFAULT_MODEL_NAME)


def build_lora_adapter(base_folder, folder, rank: int = 8, seed: int = 1):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_folder),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():  # a freshly initialised adapter is a no-op (B = 0); make it change the outputs
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.save_pretrained(folder)
    return folder


def build_reward_adapter(base_folder, folder, rank: int = 8, seed: int = 2):
    """An untrained reward-model adapter (a LoRA on a one-output sequence classifier, its score head saved with it)
    and the tokenizer, laid out as a training run leaves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(base_folder, num_labels=1),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"),
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_folder).save_pretrained(folder)
    return folder


OTHER_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_other_tokenizer(folder):
    """A real tokenizer unlike SmolLM2's: byte-level BPE trained here on a few sentences (a vocabulary of a few hundred
    tokens, other ids for the same text), with its own chat template, for models that must not share the policy's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    text = ["Say something kind, number 12. You are wonderful, friend! The quick brown fox jumps over the lazy dog."] * 20
    special = ["<unk>", "<pad>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    tokenizer.train_from_iterator(
        text, trainers.BpeTrainer(vocab_size=320, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    wrapped.chat_template = OTHER_CHAT_TEMPLATE
    wrapped.save_pretrained(folder)
    return folder


def build_tiny_model_with_other_tokenizer(folder, seed: int = 3):
    """A tiny Llama over build_other_tokenizer's vocabulary (a reward model's base that is not the policy's)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    build_other_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
        num_key_value_heads=1, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
