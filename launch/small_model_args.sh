# Sourced by the launch tests: SMALL = unified_train flags for a very small
# model on a very small synthetic set in $T/data (a few seconds a run), with
# L_d on, a progress line every step and no evaluation. Callers add --steps,
# --out_dir, checkpoint and parallel flags. Needs $CONFIG and $T.
SMALL=(--config "$CONFIG" --model.vision.image_size=16 --model.vision.patch_size=4
       --model.vision.width=16 --model.vision.layers=1 --model.vision.heads=2
       --model.vision.mlp=32 --model.llm.width=32 --model.llm.layers=2 --model.llm.heads=2
       --model.llm.kv_heads=2 --model.llm.ffn=64 --model.llm.vocab_size=128
       --model.retrieval_dim=16 --data.tokenizer_vocab=128 --data.seq_len=160
       --data.micro_batch_size=2 --data.synthetic_train=32 --data.synthetic_val=4
       --data.synthetic_test=8 --data.data_dir="$T/data" --train.log_every=1
       --train.threads=1 --train.grad_accum=2 --objective.alpha=0.1 --eval_samples=0)
