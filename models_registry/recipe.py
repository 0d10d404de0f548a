"""A training recipe (a run's or a version's ``config``) as a readable table: each setting
with its label, its value and what it means, grouped into data, method, optimisation and
hardware. The wording follows the README's table of our config fields and the TRL settings
they become. It lives in the registry, the lowest layer, because the version page
(annotation) and the run page (training) both show it."""

from dataclasses import dataclass

DATA, METHOD, OPTIMISATION, HARDWARE, OTHER = (
    "Data",
    "Method",
    "Optimisation",
    "Hardware",
    "Other",
)
GROUPS = (DATA, METHOD, OPTIMISATION, HARDWARE, OTHER)

# field: (group, label, what it means)
LABELS: dict[str, tuple[str, str, str]] = {
    # data
    "max_length": (DATA, "Max length", "Longest row in tokens (TRL's max_length)."),
    "max_prompt_length": (DATA, "Max prompt length", "Longest prompt in tokens."),
    "eval_fraction": (DATA, "Held-out share", "Share of rows kept aside for held-out metrics."),
    "curriculum": (
        DATA,
        "Curriculum",
        "Rows in that order (margin, agreement or length), not shuffled: a sequential sampler.",
    ),
    "samples_per_prompt": (DATA, "Samples per prompt", "RAFT: replies sampled per prompt."),
    "keep_fraction": (DATA, "Kept share", "RAFT: share of sampled replies kept for fine-tuning."),
    "max_responses": (
        DATA,
        "Responses per prompt",
        "RRHF: best, worst and evenly spaced between, per prompt.",
    ),
    "normalization_prompts": (
        DATA,
        "Normalisation prompts",
        "Reward model: prompts whose base-policy replies set reward mean 0, std 1.",
    ),
    "normalization_max_new_tokens": (
        DATA,
        "Normalisation reply length",
        "Reward model: new tokens per base-policy reply used for normalisation.",
    ),
    "eval_samples": (DATA, "Held-out samples", "PPO: replies sampled per held-out prompt."),
    # method
    "beta": (METHOD, "Beta", "Strength of the pull towards the reference model (same name)."),
    "loss_type": (
        METHOD,
        "Loss type",
        'DPO: sigmoid or IPO; TRL\'s loss_type=[loss_type, "sft"].',
    ),
    "nll_weight": (
        METHOD,
        "NLL weight",
        "DPO: weight of the likelihood term on chosen replies "
        "(TRL's loss_weights=[1, nll_weight]).",
    ),
    "desirable_weight": (METHOD, "Desirable weight", "KTO: weight of desirable replies."),
    "undesirable_weight": (METHOD, "Undesirable weight", "KTO: weight of undesirable replies."),
    "center_rewards_coefficient": (
        METHOD,
        "Reward centring",
        "Reward model: pulls rewards towards mean 0 (same name).",
    ),
    "use_margin": (
        METHOD,
        "Use margin",
        "Reward model: the labeler's strength as the dataset's margin column.",
    ),
    "margin_scale": (METHOD, "Margin scale", "Reward model: multiplies the margin."),
    "rank_weight": (METHOD, "Rank weight", "RRHF: weight of the hinge ranking loss."),
    "sft_weight": (METHOD, "SFT weight", "RRHF: weight of the best response's NLL."),
    "weight": (METHOD, "Soup weight", "Share of the base version's adapter in the mix."),
    "iterations": (METHOD, "Iterations", "RAFT: sample, keep the best, fine-tune; repeated."),
    "rollout_batch_size": (METHOD, "Rollout batch", "PPO: replies sampled per step."),
    "mini_batch_size": (METHOD, "Mini-batch", "PPO: replies per optimizer step."),
    "ppo_epochs": (METHOD, "PPO epochs", "PPO: passes over each rollout."),
    "max_new_tokens": (METHOD, "Max new tokens", "Longest sampled reply."),
    "temperature": (METHOD, "Temperature", "Sampling temperature of the replies."),
    "init_kl_coef": (METHOD, "Initial KL coefficient", "PPO: per-token KL penalty at start."),
    "adaptive_kl": (METHOD, "Adaptive KL", "PPO: an adaptive controller moves the KL penalty."),
    "kl_target": (METHOD, "KL target", "PPO: the KL the adaptive controller aims at."),
    "kl_horizon": (METHOD, "KL horizon", "PPO: how fast the controller moves."),
    "gamma": (METHOD, "Gamma", "PPO: discount of GAE."),
    "lam": (METHOD, "Lambda", "PPO: GAE's lambda."),
    "cliprange": (METHOD, "Policy clip", "PPO: clip range of the policy loss."),
    "cliprange_value": (METHOD, "Value clip", "PPO: clip range of the value loss."),
    "vf_coef": (METHOD, "Value loss weight", "PPO: weight of the value loss."),
    "whiten_advantages": (METHOD, "Whiten advantages", "PPO: advantages normalised."),
    "missing_eos_penalty": (
        METHOD,
        "Missing end penalty",
        "PPO: penalty for replies that never end.",
    ),
    "lora_r": (
        METHOD,
        "LoRA rank",
        "peft LoraConfig r; 0 trains every weight (full fine-tuning, SFT only).",
    ),
    "lora_alpha": (METHOD, "LoRA alpha", "peft LoraConfig lora_alpha."),
    "lora_dropout": (METHOD, "LoRA dropout", "peft LoraConfig lora_dropout."),
    "lora_target_modules": (
        METHOD,
        "LoRA modules",
        'peft LoraConfig target_modules ("all-linear" by default).',
    ),
    # optimisation
    "learning_rate": (OPTIMISATION, "Learning rate", "Peak learning rate (same name)."),
    "epochs": (OPTIMISATION, "Epochs", "Passes over the data (num_train_epochs)."),
    "max_steps": (
        OPTIMISATION,
        "Max steps",
        "Stop after this many optimizer steps (max_steps; empty: -1, the epochs decide).",
    ),
    "batch_size": (
        OPTIMISATION,
        "Batch size",
        "per_device_train_batch_size (global batch = this × processes × accumulation steps).",
    ),
    "gradient_accumulation_steps": (
        OPTIMISATION,
        "Accumulation steps",
        "Batches summed before each optimizer step (same name).",
    ),
    "warmup_ratio": (
        OPTIMISATION,
        "Warm-up share",
        "warmup_steps (a share below 1), linear schedule, max_grad_norm=1.",
    ),
    "checkpoint_every": (
        OPTIMISATION,
        "Checkpoint every",
        "save_steps (a resumed run uses resume_from_checkpoint).",
    ),
    "seed": (OPTIMISATION, "Seed", "Seeds shuffling, the held-out split and initialisation."),
    # hardware
    "mixed_precision": (
        HARDWARE,
        "Mixed precision",
        "bf16 / fp16; auto: bf16 where the hardware has it, fp16 on older GPUs, else fp32.",
    ),
    "gradient_checkpointing": (
        HARDWARE,
        "Gradient checkpointing",
        "Recompute activations in the backward pass: less memory, about a third slower.",
    ),
    "qlora": (HARDWARE, "QLoRA", "4-bit NF4 base weights under the LoRA adapter (CUDA only)."),
}


@dataclass(frozen=True)
class Setting:
    name: str
    label: str
    value: str
    meaning: str


def _shown(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "—"
    return str(value)


def recipe_table(config: dict) -> list[tuple[str, list[Setting]]]:
    """``config``'s settings as ``[(group, [Setting, ...]), ...]`` in the order of
    ``GROUPS`` (a group without settings left out); an unknown field goes to Other under its
    own name. Values are plain text: the template escapes them."""
    if not isinstance(config, dict):
        return []
    grouped: dict[str, list[Setting]] = {group: [] for group in GROUPS}
    for name, value in config.items():
        group, label, meaning = LABELS.get(name, (OTHER, name.replace("_", " "), ""))
        grouped[group].append(Setting(name, label, _shown(value), meaning))
    return [(group, settings) for group, settings in grouped.items() if settings]
