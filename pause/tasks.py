"""The data: algorithmic text for pretraining, and downstream tasks whose answer starts right after
the prompt and needs several steps of computation. Registered by name in common.data.text_tasks
(and so as seqio Tasks through text_tasks.register_seqio()).

Pretraining text (`pause_algorithmic`): lines of multi-digit addition ("347 + 285 = 632"), sorting
("sort 9 1 4 -> 1 4 9") and counting ("count a in abcab = 2").

Fine-tuning tasks, {'inputs': prompt, 'targets': answer}, exact match on the answer:
  digit_sum   "s 38194 =" -> "5": the sum of the digits mod 10 (every digit enters the answer).
  add         "a 347 285 =" -> "632": the sum, most significant digit first (the carries must be
              worked out before the first digit is written).
  count       "c b aabcbbac =" -> "4": how many times the letter occurs.
  add_2digit  "a 47 85 =" -> "132": `add` with two-digit numbers (learnable by a 2-layer CPU model
              in a few hundred steps; the 3-digit `add` and `digit_sum` are not).
  count_long  "c a abbabaabbaba =" -> "7": `count` over 12 letters of 'ab'.
Prompts use other layouts than the pretraining lines, so fine-tuning teaches the format.
"""

from __future__ import annotations

import numpy as np

from common.data import text_tasks

LETTERS = 'abc'
SPLIT_SEEDS = {'train': 0, 'test': 1_000_003}


def _digits(rng, n):
  return ''.join(str(d) for d in rng.integers(0, 10, n))


def addition_line(rng, max_digits: int = 4) -> str:
  a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, max_digits + 1)))) for _ in range(2))
  return f'{a} + {b} = {a + b}'


def sorting_line(rng, max_items: int = 6) -> str:
  items = rng.integers(0, 10, int(rng.integers(2, max_items + 1)))
  return f'sort {" ".join(map(str, items))} -> {" ".join(map(str, np.sort(items)))}'


def counting_line(rng, max_chars: int = 10) -> str:
  letter = LETTERS[int(rng.integers(len(LETTERS)))]
  text = ''.join(rng.choice(list(LETTERS), int(rng.integers(3, max_chars + 1))))
  return f'count {letter} in {text} = {text.count(letter)}'


def algorithmic_text(num_lines: int, seed: int) -> str:
  rng = np.random.default_rng(seed)
  makers = (addition_line, sorting_line, counting_line)
  return '\n'.join(makers[int(rng.integers(3))](rng) for _ in range(num_lines)) + '\n'


def digit_sum_example(rng, num_digits: int = 5) -> dict[str, str]:
  digits = _digits(rng, num_digits)
  return {'inputs': f's {digits} =', 'targets': str(sum(map(int, digits)) % 10)}


def add_example(rng, num_digits: int = 3) -> dict[str, str]:
  a, b = (int(rng.integers(0, 10 ** num_digits)) for _ in range(2))
  return {'inputs': f'a {a:0{num_digits}d} {b:0{num_digits}d} =', 'targets': str(a + b)}


def count_example(rng, num_chars: int = 8, letters: str = LETTERS) -> dict[str, str]:
  letter = letters[int(rng.integers(len(letters)))]
  text = ''.join(rng.choice(list(letters), num_chars))
  return {'inputs': f'c {letter} {text} =', 'targets': str(text.count(letter))}


TASKS = {
    'digit_sum': digit_sum_example,
    'add': add_example,
    'count': count_example,
    'add_2digit': lambda rng: add_example(rng, num_digits=2),
    'count_long': lambda rng: count_example(rng, num_chars=12, letters='ab'),
}
# The longest prompt and answer of each task, in tokens (one per character): what check_config
# needs to know that every row and prompt fits, without drawing the examples.
MAX_TOKENS = {  # name: (prompt, answer)
    'digit_sum': (9, 1),       # 's ddddd =' -> '0' .. '9'
    'add': (11, 4),            # 'a ddd ddd =' -> up to '1998'
    'count': (14, 1),          # 'c x xxxxxxxx =' -> '0' .. '8'
    'add_2digit': (9, 3),      # 'a dd dd =' -> up to '198'
    'count_long': (18, 2),     # 'c x ' + 12 letters + ' =' -> '0' .. '12'
}
# Each task's own random stream (fixed per name, so adding a task changes no other task's data).
TASK_STREAMS = {'add': 0, 'count': 1, 'digit_sum': 2, 'add_2digit': 3, 'count_long': 4}


def task_examples(name: str, split: str, num: int, seed: int = 0,
                  train_size: int | None = None) -> list[dict[str, str]]:
  """`num` examples of a task; train and test draw from disjoint seeds, and test prompts that also
  occur among the first `train_size` training examples (those a model is fine-tuned on; default
  REGISTERED_SIZES['train']) are dropped, so the test measures computation, not recall: the test
  split may hold fewer than `num` examples."""
  if name not in TASKS:
    raise text_tasks.TaskError(f'Unknown pause task {name!r}; available: {sorted(TASKS)}.')
  if split not in SPLIT_SEEDS:
    raise text_tasks.TaskError(f'Unknown split {split!r}; use one of {sorted(SPLIT_SEEDS)}.')
  rng = np.random.default_rng([SPLIT_SEEDS[split], seed, TASK_STREAMS[name]])
  out = [TASKS[name](rng) for _ in range(num)]
  if split == 'test':
    train_size = REGISTERED_SIZES['train'] if train_size is None else train_size
    seen = {ex['inputs'] for ex in task_examples(name, 'train', train_size, seed)}
    out = [ex for ex in out if ex['inputs'] not in seen]
    if not out:
      raise text_tasks.TaskError(
          f'Every one of the {num} test prompts of {name!r} occurs among its {train_size} '
          'training examples: the task has too few distinct prompts for this split.')
  return out


# Registered sizes: what a pipeline reading the tasks by name gets.
REGISTERED_SIZES = {'train': 4096, 'test': 512}

for _name in TASKS:
  text_tasks.register(text_tasks.TextTask(
      f'pause_{_name}',
      lambda split, seed, _name=_name: task_examples(_name, split, REGISTERED_SIZES[split], seed),
      description=f'Pause paper downstream task {_name!r} (pause/tasks.py).'))

text_tasks.register(text_tasks.TextTask(
    'pause_algorithmic',
    lambda split, seed: [{'targets': algorithmic_text(64, SPLIT_SEEDS[split] + seed + i)}
                         for i in range(64 if split == 'train' else 8)],
    description='Addition, sorting and counting lines (pause/tasks.py).'))
