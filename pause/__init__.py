"""Pause tokens (Goyal et al., 2023, arXiv 2310.02226): delaying the answer with <pause> tokens.

    from pause import insert_pauses, pretrain_batch, finetune_batch, inference_prompt, Delay
    batch = pretrain_batch(rows, num_pauses=6, rng=np.random.default_rng(0))
    stream.StreamIterator(text_rows, 256, transform=PauseRows(205))  # rows read batch by batch
    batch = finetune_batch(prefixes, targets, Delay(8), length=40)
    prompt = inference_prompt(prefix, num_pauses=8)   # decode with common.models.decoding
"""

from pause.pausing import CONFIGURATIONS
from pause.pausing import Delay
from pause.pausing import FILLER_ID
from pause.pausing import PAUSE_ID
from pause.pausing import PauseRows
from pause.pausing import PauseError
from pause.pausing import Setting
from pause.pausing import check_count
from pause.pausing import check_ids
from pause.pausing import check_pause_id
from pause.pausing import configuration
from pause.pausing import finetune_batch
from pause.pausing import inference_prompt
from pause.pausing import insert_pauses
from pause.pausing import pretrain_batch
from pause.pausing import pretrain_pauses
from pause import tasks  # registers the tasks in common.data.text_tasks
