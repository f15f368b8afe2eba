"""Action and instruction tokenizers, the three OPD losses on hand-computed distributions, and an OPD update that
moves a token student toward its teacher."""

import math

import numpy as np
import pytest
import torch

import envs
from envs.base import encode_instruction
from policies.tokens import UNK, ActionTokenizer, InstructionTokenizer, build_vocab
from policies.vla import VLAPolicy
from robodistill.data.buffer import LabelBuffer
from robodistill.learners.fitting import regress
from robodistill.learners.opd import LOGITS, token_entropy, token_loss
from robodistill.tasks import make_env, shape_meta


def test_action_tokens_round_trip_within_half_a_bin_and_edges_land_in_the_upper_bin():
    tok = ActionTokenizer(256)
    a = torch.linspace(-1, 1, 10_001)[:, None]
    back = tok.detokenize(tok.tokenize(a))
    assert (back - a).abs().max() <= tok.width / 2 + 1e-6
    assert tok.tokenize(torch.tensor([[-1.0, 1.0, 0.0, -1.0 + 3 * tok.width]])).tolist() == [[0, 255, 128, 3]]
    assert tok.tokenize(torch.tensor([[-7.0, 7.0]])).tolist() == [[0, 255]]  # clipped to [-1, 1] first
    tokens = torch.arange(256)[:, None]
    assert torch.equal(tok.tokenize(tok.detokenize(tokens)), tokens)  # every bin centre maps to its own token
    assert ActionTokenizer(4).detokenize(torch.tensor([0, 3])).tolist() == [-0.75, 0.75]
    with pytest.raises(ValueError, match="NaN"):
        tok.tokenize(torch.tensor([[0.0, float("nan")]]))


def test_soft_targets_are_a_gaussian_over_the_bins_around_the_action():
    tok = ActionTokenizer(256)
    a = torch.tensor([[-1.0, -0.3, 0.01, 0.999]])
    soft = tok.soft_targets(a, sigma_bins=2.0)
    assert soft.shape == (1, 4, 256) and torch.allclose(soft.sum(-1), torch.ones(1, 4))
    assert torch.equal(soft.argmax(-1), tok.tokenize(a))  # the mode is the action's own bin
    assert soft[0, 1, tok.tokenize(a)[0, 1] + 1] > soft[0, 1, tok.tokenize(a)[0, 1] + 4]  # near beats far
    sharp = tok.soft_targets(a, sigma_bins=0.05)
    assert torch.all(sharp.max(-1).values > 0.99)  # a tiny sigma is the one-hot label
    on_edge = tok.soft_targets(torch.tensor([[0.0]]), sigma_bins=0.05)[0, 0]
    assert on_edge[127].item() == pytest.approx(0.5) and on_edge[128].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="NaN"):
        tok.soft_targets(torch.tensor([[float("inf")]]), 2.0)


def test_instructions_become_word_ids_with_unknown_words_and_padding():
    vocab = build_vocab(envs.instruction_templates())
    words = InstructionTokenizer(vocab, max_words=6)
    raw = np.stack([encode_instruction("push the red cube"), encode_instruction("push the purple elephant")])
    ids, pad = words(raw)
    assert ids.shape == (2, 6)
    names = [[vocab[i] for i in row if i] for row in ids.tolist()]
    assert names == [["push", "the", "red", "cube"], ["push", "the", UNK, UNK]]
    assert pad.tolist()[0] == [False] * 4 + [True] * 2
    known = [words.ids(t) for t in envs.instruction_templates()]
    assert all(1 not in ids for ids in known)  # every task's own words are in the vocabulary


def test_reverse_forward_kl_and_hard_ce_match_hand_computed_values():
    # dimension 0: student [0.5, 0.5], teacher [0.8, 0.2]; dimension 1: both [0.3, 0.7]
    student = torch.log(torch.tensor([[[0.5, 0.5], [0.3, 0.7]]]))
    teacher = torch.log(torch.tensor([[[0.8, 0.2], [0.3, 0.7]]])) + 5.0  # logits: a shift changes nothing
    rkl = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    fkl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    ce = -math.log(0.5) - math.log(0.7)  # teacher argmax: bin 0 in dimension 0, bin 1 in dimension 1
    assert token_loss(student, teacher, "rkl").item() == pytest.approx(rkl, abs=1e-6)
    assert token_loss(student, teacher, "fkl").item() == pytest.approx(fkl, abs=1e-6)
    assert token_loss(student, teacher, "ce").item() == pytest.approx(ce, abs=1e-6)
    assert token_entropy(student)[0, 0].item() == pytest.approx(math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="rkl"):
        token_loss(student, teacher, "mse")


def test_reverse_kl_is_zero_exactly_when_the_distributions_match():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 256, generator=g)
    assert token_loss(logits, logits + 3.0, "rkl").abs().max().item() < 1e-5
    other = logits.clone()
    other[2, 1, 7] += 0.5  # one bin of one token differs
    kl = token_loss(logits, other, "rkl")
    assert kl[2].item() > 1e-6 and torch.all(kl[[0, 1, 3, 4]].abs() < 1e-5)


def test_an_opd_update_moves_the_student_toward_the_teacher():
    torch.manual_seed(0)
    env = make_env({"env_id": "robodistill/PushCube-v0", "kwargs": {"image_size": 32}}, "rgb+language")
    meta = shape_meta(env)
    vocab = build_vocab(envs.instruction_templates())
    keys = ["front_rgb", "wrist_rgb", "proprio", "instruction"]
    teacher = VLAPolicy(meta, keys, vocab, bins=32, d_model=32, layers=1).eval()
    student = VLAPolicy(meta, keys, vocab, bins=32, d_model=32, layers=1)
    obs = []
    for seed in range(8):
        o, _ = env.reset(seed=seed)
        for _ in range(3):
            obs.append(o)
            o, *_ = env.step(env.action_space.sample())
    batch = {k: np.stack([o[k] for o in obs]) for k in keys}
    student.fit_normalizers(batch)
    _, teacher_logits = teacher.label(batch)
    buffer = LabelBuffer()
    buffer.add({**batch, LOGITS: teacher_logits})

    def kl() -> float:
        with torch.no_grad():
            student_logits = student({k: torch.as_tensor(v) for k, v in batch.items()})
            return token_loss(student_logits, torch.as_tensor(teacher_logits), "rkl").mean().item()

    def loss(o, t):
        value = token_loss(student(o), t, "rkl").mean()
        return value, {"rkl": value.item()}

    before = kl()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    regress(student, optimizer, buffer, 40, 16, np.random.default_rng(0), progress=False, loss_fn=loss, label=LOGITS)
    assert kl() < 0.5 * before
    env.close()
