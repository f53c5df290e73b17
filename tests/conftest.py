"""Shared fixtures: tiny random Qwen2.5-VL checkpoints (real architecture, real Qwen vocabulary)
saved to disk, and real mp4 clips made here. Everything runs offline on the CPU in float32."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Small frames keep the tests fast: 8 frames at 112x112 -> 4 temporal slices x 16 merged tokens.
from testbed.paths import VIDEO_ARGS  # noqa: F401  (tests import it from here)


#: Files whose runs take minutes (lmms-eval CLI runs, benchmark subprocesses), longest single tests first.
#: They are started first, and the CLI tests marked slow after them, so that the two pytest-xdist workers
#: of `make test` (--dist worksteal) end together instead of one waiting on a long test started last.
LONG_FIRST = ("test_reproduce_paper.py", "test_report_baseline.py", "test_real_size.py", "test_cli.py",
              "test_robust.py", "test_testbed_models.py")


def pytest_collection_modifyitems(config, items):
    def order(item) -> tuple[int, int]:
        name = item.path.name
        if name in LONG_FIRST:
            return (0, LONG_FIRST.index(name))
        return (1, 0) if item.get_closest_marker("slow") else (2, 0)

    items.sort(key=order)  # stable: a file's tests keep their order (and their module fixtures)


def method(name: str, **args):
    """A decoding method as the backends build it: `build_method` over validated model args."""
    from lvspec_eval.config import LVSpecArgs
    from lvspec_eval.engine import build_method

    built = LVSpecArgs(method=name, **args)
    built.validate()
    return build_method(built)


@pytest.fixture(scope="session")
def ckpt_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="session")
def trained_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The trained testbed checkpoints (testbed/weights/), materialised once per session, by role. Their
    greedy answers win by clear logit margins, unlike a random tiny model's (top-2 ties are common in
    bfloat16 there), so tests comparing a speculative decode with another backend in bfloat16 use them."""
    from testbed.checkpoints import checkpoint

    cache = tmp_path_factory.mktemp("testbed_ckpt")

    class Materialised(dict):  # a role is materialised when first asked for
        def __missing__(self, role: str) -> Path:
            self[role] = path = checkpoint(role, cache=cache)
            return path

    return Materialised()


@pytest.fixture(scope="session")
def tiny_target(ckpt_root) -> str:
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl

    return str(build_tiny_qwen2_5_vl(ckpt_root / "target", seed=0))


@pytest.fixture(scope="session")
def tiny_draft(ckpt_root) -> str:
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl

    return str(build_tiny_qwen2_5_vl(ckpt_root / "draft", seed=1))


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    """A copy of tasks/lvspec_tiny with its clips (shared by the CLI tests)."""
    from testbed.fixtures.cli import copy_tiny_task

    return copy_tiny_task(tmp_path_factory.mktemp("tasks") / "lvspec_tiny")


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> list[str]:
    from testbed.fixtures.video import make_clip

    root = tmp_path_factory.mktemp("clips")
    return [str(make_clip(root / f"clip_{i}.mp4", seed=i, frames=16)) for i in range(3)]


@pytest.fixture(scope="session")
def qwen_target(tiny_target):
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter

    return QwenVLAdapter.load(tiny_target, dtype="float32", device_map="cpu", **VIDEO_ARGS)


@pytest.fixture(scope="session")
def qwen_draft(tiny_draft):
    from lvspec_eval.adapters.qwen2_5_vl import QwenVLAdapter

    return QwenVLAdapter.load(tiny_draft, dtype="float32", device_map="cpu", **VIDEO_ARGS)


def video_messages(adapter, clip: str, question: str = "Describe the video.") -> list:
    return [{"role": "user", "content": [
        {"type": "video", "video": clip, **adapter.video_kwargs([clip])},
        {"type": "text", "text": question},
    ]}]


@pytest.fixture(scope="session")
def qwen_inputs(qwen_target, clips) -> list[dict]:
    return [qwen_target.prepare(video_messages(qwen_target, c)) for c in clips]


# -- LLaVA-OneVision (tiny, real architecture, real Qwen2 vocabulary) ------------------------------
LLAVA_VIDEO_ARGS = dict(max_num_frames=VIDEO_ARGS["max_num_frames"])  # 8 frames at 112x112 -> 8 x 16 pooled tokens + 1 newline


@pytest.fixture(scope="session")
def tiny_llava_target(ckpt_root) -> str:
    from testbed.fixtures.tiny_llava import build_tiny_llava_onevision

    return str(build_tiny_llava_onevision(ckpt_root / "llava_target", seed=0))


@pytest.fixture(scope="session")
def tiny_llava_draft(ckpt_root) -> str:
    from testbed.fixtures.tiny_llava import build_tiny_llava_onevision
    from testbed.fixtures.tokenizer import PADDED_EMBEDDING_ROWS

    # drafter embedding rows differ from the target's, as LLaVA-OneVision 0.5B/7B/72B do
    return str(build_tiny_llava_onevision(ckpt_root / "llava_draft", seed=1, vocab_size=PADDED_EMBEDDING_ROWS))


@pytest.fixture(scope="session")
def llava_target(tiny_llava_target):
    from lvspec_eval.adapters.llava_onevision import LlavaOnevisionAdapter

    return LlavaOnevisionAdapter.load(tiny_llava_target, dtype="float32", device_map="cpu", **LLAVA_VIDEO_ARGS)


@pytest.fixture(scope="session")
def llava_draft(tiny_llava_draft):
    from lvspec_eval.adapters.llava_onevision import LlavaOnevisionAdapter

    return LlavaOnevisionAdapter.load(tiny_llava_draft, dtype="float32", device_map="cpu", **LLAVA_VIDEO_ARGS)


@pytest.fixture(scope="session")
def llava_inputs(llava_target, clips) -> list[dict]:
    return [llava_target.prepare(video_messages(llava_target, c)) for c in clips]


# -- Qwen3-VL (tiny, real architecture, DeepStack on, real Qwen3 vocabulary): dense and MoE -----------
from testbed.fixtures.tiny_qwen3 import QWEN3_VL_VIDEO_ARGS  # noqa: E402  (8 frames -> 4 x 16 video tokens)


def _qwen3(ckpt_root, name: str, seed: int, moe: bool, **config) -> str:
    from testbed.fixtures.tiny_qwen3 import build_tiny_qwen3_vl

    return str(build_tiny_qwen3_vl(ckpt_root / name, seed=seed, moe=moe, **config))


@pytest.fixture(scope="session")
def tiny_qwen3_target(ckpt_root) -> str:  # dense, untied embeddings (as the 8B / 32B)
    return _qwen3(ckpt_root, "qwen3_target", 0, False)


@pytest.fixture(scope="session")
def tiny_qwen3_moe_target(ckpt_root) -> str:
    """MoE; "A1B" in the name so that lmms-eval's qwen3_vl loads it as MoE. Seed 4: random tiny models
    rarely agree, and with this one the relaxed rules (target_prob at lambda 0.999, a pruned Self-SD
    drafter) find something to accept in the shared tests (seed 2 did not)."""
    return _qwen3(ckpt_root, "qwen3_moe_target-A1B", 4, True)


@pytest.fixture(scope="session")
def tiny_qwen3_draft(ckpt_root) -> str:  # dense, tied embeddings (as the 2B / 4B), 2 layers
    return _qwen3(ckpt_root, "qwen3_draft", 3, False, layers=2, tie_embeddings=True)


def _qwen3_adapter(path):
    from lvspec_eval.adapters.qwen3_vl import Qwen3VLAdapter

    return Qwen3VLAdapter.load(path, dtype="float32", device_map="cpu", **QWEN3_VL_VIDEO_ARGS)


@pytest.fixture(scope="session")
def qwen3_target(tiny_qwen3_target):
    return _qwen3_adapter(tiny_qwen3_target)


@pytest.fixture(scope="session")
def qwen3_moe_target(tiny_qwen3_moe_target):
    return _qwen3_adapter(tiny_qwen3_moe_target)


@pytest.fixture(scope="session")
def qwen3_draft(tiny_qwen3_draft):
    return _qwen3_adapter(tiny_qwen3_draft)


@pytest.fixture(scope="session")
def qwen3_inputs(qwen3_target, clips) -> list[dict]:
    return [qwen3_target.prepare(video_messages(qwen3_target, c)) for c in clips]


# the MoE pair: the MoE target drafted by the small dense model (as a 30B-A3B drafted by a 2B)
@pytest.fixture(scope="session")
def qwen3moe_target(qwen3_moe_target):
    return qwen3_moe_target


@pytest.fixture(scope="session")
def qwen3moe_draft(qwen3_draft):
    return qwen3_draft


@pytest.fixture(scope="session")
def qwen3moe_inputs(qwen3_moe_target, clips) -> list[dict]:
    return [qwen3_moe_target.prepare(video_messages(qwen3_moe_target, c)) for c in clips]


# -- every family: tests that take `target` / `draft` / `inputs` run once per family --------------
FAMILIES = {"qwen2_5_vl": "qwen", "llava_onevision": "llava", "qwen3_vl": "qwen3", "qwen3_vl_moe": "qwen3moe"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def target(family, request):
    return request.getfixturevalue(f"{FAMILIES[family]}_target")


@pytest.fixture(scope="module")
def draft(family, request):
    return request.getfixturevalue(f"{FAMILIES[family]}_draft")


@pytest.fixture(scope="module")
def inputs(family, request):
    return request.getfixturevalue(f"{FAMILIES[family]}_inputs")


# -- checkpoints whose generation config turns on a logits processor (lvspec_eval/engine/processors.py) ----
#: at init_std 0.15 the tiny models repeat themselves, so the real checkpoints' repetition_penalty 1.05 changes
#: their greedy answers (at the default 0.3 they never repeat a token within 40 and the penalty rarely acts)
REPETITIVE_STD = 0.15


@pytest.fixture(scope="session")
def tiny_repetitive_target(ckpt_root) -> str:
    """A tiny Qwen2.5-VL that repeats itself, with the tiny checkpoints' generation config (no processor)."""
    from testbed.fixtures.tiny import build_tiny_qwen2_5_vl

    return str(build_tiny_qwen2_5_vl(ckpt_root / "repetitive_target", seed=0, init_std=REPETITIVE_STD))


@pytest.fixture(scope="session")
def tiny_penalty_target(ckpt_root, tiny_repetitive_target) -> str:
    """`tiny_repetitive_target` with the real Instruct checkpoints' generation_config.json (repetition_penalty 1.05)."""
    from testbed.fixtures.checkpoint_edits import QWEN2_5_VL_INSTRUCT_GENERATION, with_generation_config

    return str(with_generation_config(tiny_repetitive_target, ckpt_root / "penalty_target",
                                      **QWEN2_5_VL_INSTRUCT_GENERATION))


@pytest.fixture(scope="session")
def tiny_llava_penalty_target(ckpt_root) -> str:
    """A tiny LLaVA-OneVision with repetition_penalty 1.05 in its generation_config.json."""
    from testbed.fixtures.checkpoint_edits import with_generation_config
    from testbed.fixtures.tiny_llava import build_tiny_llava_onevision

    plain = build_tiny_llava_onevision(ckpt_root / "repetitive_llava_target", seed=0, init_std=REPETITIVE_STD)
    return str(with_generation_config(plain, ckpt_root / "llava_penalty_target", repetition_penalty=1.05))
