"""``sbsopt cost``: the per-term step time of one DP+EP instance under a balanced load."""

from __future__ import annotations

import json

import click

from sbsopt.errors import InvalidInputError

__all__ = ["cost"]


@click.command()
@click.option("--phase", type=click.Choice(["prefill", "decode"]), default="prefill", show_default=True)
@click.option("--ep", type=int, default=32, show_default=True, help="EP size = DP ranks.")
@click.option("--tokens-per-rank", type=float, default=None, help="Prefill: new tokens per rank (default 16384).")
@click.option("--batch-per-rank", type=float, default=None, help="Decode: requests per rank (default 128).")
@click.option("--context", type=float, default=4096, show_default=True,
              help="Prefill: prompt length; decode: mean KV length.")
@click.option("--query-tokens", type=int, default=1, show_default=True,
              help="Decode: tokens per request (ignored when --mtp-acceptance is given).")
@click.option("--mtp-acceptance", type=float, default=None,
              help="Decode: MTP acceptance rate (0 = no MTP; default 0.85, DeepSeek-V3 report).")
@click.option("--cached-tokens", type=float, default=0.0, show_default=True,
              help="Prefill: cached prefix tokens per request.")
@click.option("--micro-batches", type=int, default=2, show_default=True)
@click.option("--model", "model_card", default="deepseek-v3", show_default=True, help="Model card name or path.")
@click.option("--hardware", default="h800", show_default=True, help="Hardware card name or path.")
@click.option("--nodes", type=int, default=None, help="Nodes the EP group spans (default: fewest).")
@click.option("--gpus-per-node", type=int, default=None, help="Default: the hardware card's.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def cost(phase, ep, tokens_per_rank, batch_per_rank, context, query_tokens, mtp_acceptance, cached_tokens,
         micro_batches, model_card, hardware, nodes, gpus_per_node, as_json) -> None:
    """Predict one forward pass (all layers) and its per-term breakdown.

    \b
    sbsopt cost --phase prefill --ep 32 --tokens-per-rank 16384 --context 4096 --micro-batches 2
    sbsopt cost --phase decode --ep 128 --batch-per-rank 128 --context 4096 --query-tokens 2
    """
    from sbsopt.costmodel import load_cost_model
    from sbsopt.costmodel.step import DEFAULT_MTP_ACCEPTANCE

    if phase == "prefill":
        if batch_per_rank is not None:
            raise InvalidInputError("--batch-per-rank", batch_per_rank, "only with --phase decode")
        load = 16384.0 if tokens_per_rank is None else tokens_per_rank
        if mtp_acceptance is not None:
            raise InvalidInputError("--mtp-acceptance", mtp_acceptance, "only with --phase decode")
    else:
        if cached_tokens:
            raise InvalidInputError("--cached-tokens", cached_tokens, "only with --phase prefill")
        if mtp_acceptance is None and query_tokens == 1:
            mtp_acceptance = DEFAULT_MTP_ACCEPTANCE
        if tokens_per_rank is not None:
            raise InvalidInputError("--tokens-per-rank", tokens_per_rank, "only with --phase prefill")
        load = 128.0 if batch_per_rank is None else batch_per_rank
    cm = load_cost_model(model_card, hardware, ep=ep, nodes=nodes, gpus_per_node=gpus_per_node,
                         micro_batches=micro_batches)
    result = cm.breakdown(phase=phase, tokens_per_rank=load, context=context, query_tokens=query_tokens,
                          cached_tokens=cached_tokens, mtp_acceptance=mtp_acceptance)
    query_tokens = 2 if mtp_acceptance else query_tokens if mtp_acceptance is None else 1
    step_s = result.step_us * 1e-6
    payload = {
        "phase": phase,
        "ep": cm.ep,
        "nodes": cm.nodes,
        "micro_batches": cm.micro_batches,
        "load_per_rank": load,
        "context": context,
        "query_tokens": query_tokens,
        "step_ms": result.step_us / 1e3,
        "moe_layer_ms": result.moe_layer_us / 1e3,
        "dense_layer_ms": result.dense_layer_us / 1e3,
        "head_ms": result.head_us / 1e3,
        "terms_us": result.terms_us,
        "kernels_us": result.kernels_us,
        "compute_us": result.compute_us,
        "comm_us": result.comm_us,
        "exposed_comm_us": result.exposed_comm_us,
        "stages_us": result.stages_us,
        "alltoall_bottleneck": cm.normal_path.bottleneck if phase == "prefill" else cm.ll_path.bottleneck,
    }
    if phase == "prefill":
        input_tokens = load * (context + cached_tokens) / context if context > 0 else load
        payload["cached_tokens"] = cached_tokens
        payload["input_tok_s_per_node"] = input_tokens * cm.gpus_per_node / step_s
    else:
        payload["mtp_acceptance"] = mtp_acceptance or 0.0
        payload["tokens_per_s_per_user"] = result.tokens_per_step / step_s
        payload["output_tok_s_per_node"] = load * result.tokens_per_step * cm.gpus_per_node / step_s
    if as_json:
        click.echo(json.dumps(payload, sort_keys=True))
        return
    unit = "tokens" if phase == "prefill" else "requests"
    click.echo(f"{cm.model.name} on {cm.hardware.name}: {phase}, EP{cm.ep} over {cm.nodes} node(s), "
               f"{load:g} {unit}/rank, context {context:g}, {micro_batches} micro-batch(es)")
    click.echo(f"{'term (one MoE layer, one micro-batch)':<40} {'us':>10}")
    for name, value in result.terms_us.items():
        click.echo(f"{name:<40} {value:>10.1f}")
    click.echo(f"{'compute / comm per micro-batch':<40} {result.compute_us:>10.1f} / {result.comm_us:.1f}")
    click.echo(f"{'MoE layer (all micro-batches, overlap)':<40} {result.moe_layer_us / 1e3:>10.3f} ms")
    click.echo(f"{'dense layer':<40} {result.dense_layer_us / 1e3:>10.3f} ms")
    click.echo(f"{'exposed comm per layer and micro-batch':<40} {result.exposed_comm_us:>10.1f}")
    click.echo(f"{'step (all layers + head)':<40} {result.step_us / 1e3:>10.3f} ms")
    for key in ("input_tok_s_per_node", "tokens_per_s_per_user", "output_tok_s_per_node"):
        if key in payload:
            click.echo(f"{key:<40} {payload[key]:>10.1f}")
