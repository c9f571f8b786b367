"""Pause tokens (Goyal et al., 2023, arXiv 2310.02226): delaying the answer with <pause> tokens.

    from pause import insert_pauses, pretrain_batch, finetune_batch, inference_prompt, Delay
    batch = pretrain_batch(rows, num_pauses=6, rng=np.random.default_rng(0))
    batch = finetune_batch(prefixes, targets, Delay(8), length=40)
    prompt = inference_prompt(prefix, num_pauses=8)   # decode with common.models.decoding
"""

from pause.pausing import (CONFIGURATIONS, Delay, FILLER_ID, PAUSE_ID, PauseError, Setting,
                           check_count, check_ids, check_pause_id, configuration, finetune_batch,
                           inference_prompt, insert_pauses, pretrain_batch, pretrain_pauses)
from pause import tasks  # registers the tasks in common.data.text_tasks

__all__ = ['CONFIGURATIONS', 'Delay', 'FILLER_ID', 'PAUSE_ID', 'PauseError', 'Setting',
           'check_count', 'check_ids', 'check_pause_id', 'configuration', 'finetune_batch',
           'inference_prompt', 'insert_pauses', 'pretrain_batch', 'pretrain_pauses', 'tasks']
