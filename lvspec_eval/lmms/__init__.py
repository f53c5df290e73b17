"""lmms-eval glue. This module is imported on every `import lmms_eval.models` (entry point
`lmms_eval.models`): it must stay free of torch and of `lmms_eval.models` imports at module level."""

BACKENDS = {
    "lvspec_qwen": "lvspec_eval.lmms.qwen.LVSpecQwen",
    "lvspec_llava_ov": "lvspec_eval.lmms.llava_ov.LVSpecLlavaOV",
    "lvspec_qwen3_vl": "lvspec_eval.lmms.qwen3_vl.LVSpecQwen3VL",
}


def manifests():
    """Entry-point payload: one lmms-eval ModelManifest (chat model) per backend."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, chat_class_path=path) for name, path in BACKENDS.items()]
