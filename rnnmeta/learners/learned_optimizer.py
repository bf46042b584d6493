"""A few-shot learner whose inner loop is a learned update rule: gated gradient descent from a meta-learned start.

For each task a base network (backbone + linear head) starts from a meta-learned initialisation
``theta_0``, is trained on the support set for ``inner_steps`` steps by a learned update rule, and
answers the queries with the adapted weights::

    theta_{t+1} = theta_t + m_phi(grad L_support(theta_t), L_support(theta_t), theta_t, state_t)
    preds = f(query_x; theta_T)

The rule is the gated update in the form of Ravi & Larochelle's (2017) cell update
(``update_rule="ravi_larochelle"``, :class:`~rnnmeta.optim.RaviLarochelleUpdate`: a learned
per-coordinate learning rate and forget gate) or the coordinatewise LSTM of Andrychowicz et al.
(2016) (``update_rule="lstm"``). It is **not** Ravi & Larochelle's meta-learner (docs/LEARNED_OPTIMIZER.md
lists the differences). ``theta_0`` and ``phi`` are meta-learned through the unrolled inner loop,
first order by default (the support gradients and losses fed to the rule are constants);
batch norm works as in MAML (``query_bn``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Literal, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from rnnmeta.learners.sequence import check_query, embed
from rnnmeta.learners.base import MetaLearner
from rnnmeta.nets import batch_norm_layers, check_query_bn, reference_batch_norm, require_batch_statistics, resolve_backbone
from rnnmeta.optim.base import MetaOptimizer, apply_updates
from rnnmeta.optim.lstm_optimizer import CoordinatewiseLSTMOptimizer
from rnnmeta.optim.ravi_larochelle import RaviLarochelleUpdate


class LearnedOptimizerPredictor:
    """Answers queries with the adapted weights of each task.

    ``adapted`` is one parameter list per task, or (``batched``) one list of ``[B, *shape]``
    tensors holding every task's weights.
    """

    def __init__(
        self,
        learner: "LearnedOptimizer",
        adapted: list,
        meta_graph: bool,
        shape_ref: Tensor,
        batched: bool = False,
        support_x: Optional[Tensor] = None,
    ) -> None:
        self.learner, self.adapted, self.meta_graph, self.batched = learner, adapted, meta_graph, batched
        self.shape_ref = shape_ref  # [B, 0, *x]: the adapted support set's shape, for checking queries
        self.support_x = support_x  # [B, S, *x]: batch-norm statistics of the query pass (query_bn="support")

    def __call__(self, query_x: Tensor) -> Tensor:
        check_query(self.shape_ref, query_x)
        with torch.set_grad_enabled(self.meta_graph and torch.is_grad_enabled()):
            if self.batched:
                return self.learner.batched_forward(self.adapted, query_x)
            if self.support_x is not None:
                return torch.stack(
                    [self.learner.support_normalised_forward(p, s, q) for p, s, q in zip(self.adapted, self.support_x, query_x)]
                )
            return torch.stack([self.learner.base_forward(p, q) for p, q in zip(self.adapted, query_x)])


class LearnedOptimizer(MetaLearner):
    """Few-shot learning with a learned inner-loop update rule (gated gradient descent; not Ravi & Larochelle's meta-learner).

    Args:
        backbone: the base network's feature extractor (needs ``out_features``); ``None`` gives
            ``Conv4()`` for classification and ``MLP(1, [40, 40])`` for regression. Batch norm
            must use per-task batch statistics (``track_running_stats=False``), as in MAML.
        update_rule: ``"ravi_larochelle"`` (learned gates around a gradient step, in the form of
            Ravi & Larochelle's cell update; 14 meta-parameters) or ``"lstm"`` (coordinatewise
            2-layer LSTM of Andrychowicz et al.).
        inner_steps: inner-loop steps on the support set (training).
        eval_inner_steps: inner-loop steps at evaluation; ``None`` uses ``inner_steps``.
        init_inner_lr: ``ravi_larochelle``: the input gate (learning rate) at initialisation.
        init_forget_bias: ``ravi_larochelle``: forget-gate bias at initialisation.
        lstm_hidden: ``lstm``: units per LSTM layer (20 in the paper).
        lstm_layers: ``lstm``: stacked layers (2).
        preprocess_p: gradient-preprocessing constant ``p`` (10).
        output_scale: ``lstm``: scale of the LSTM's output (0.1); learned when
            ``learn_output_scale``.
        learn_output_scale: ``lstm``: meta-learn the output scale.
        second_order: keep second derivatives in the meta-gradient.
        query_bn: ``"transductive"`` (batch norm over the query batch, as MAML) or ``"support"``
            (queries normalised with the support set's batch statistics: each query answered on its
            own). Applies in training and evaluation; no effect without batch norm.
        batch_tasks: run the inner loops of all tasks at once (``torch.func.vmap`` over tasks)
            when the base network has no batch norm (``vmap`` over batch norm gave wrong
            meta-gradients); both paths give the same predictions and meta-gradients.
        adapted: ``"all"`` (every weight of the base network is trained by the rule, as in MAML) or
            ``"head"``: only the linear head is, on the backbone's features of each example, computed
            once a task (ANIL: Raghu et al. 2020, "Rapid learning or feature reuse?"). The backbone
            is still meta-learned, through the queries' features (and, with ``second_order``, the
            support features the inner loop read). An embedding table is then never copied per task.
        **kwargs: kind, n_way, target_dim, optimizer, lr_scheduler: see :class:`MetaLearner`.

    Shapes: those of :meth:`~rnnmeta.learners.base.MetaLearner.forward`.
    """

    needs_grad_at_eval = True

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        update_rule: Literal["ravi_larochelle", "lstm"] = "ravi_larochelle",
        inner_steps: int = 5,
        eval_inner_steps: Optional[int] = None,
        init_inner_lr: float = 0.1,
        init_forget_bias: float = 5.0,
        lstm_hidden: int = 20,
        lstm_layers: int = 2,
        preprocess_p: float = 10.0,
        output_scale: float = 0.1,
        learn_output_scale: bool = False,
        second_order: bool = False,
        query_bn: Literal["transductive", "support"] = "transductive",
        batch_tasks: bool = True,
        adapted: Literal["all", "head"] = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if adapted not in ("all", "head"):
            raise ValueError(f"adapted must be 'all' (every weight of the base network) or 'head' (the linear head only), got {adapted!r}")
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        if eval_inner_steps is not None and eval_inner_steps < 1:
            raise ValueError(f"eval_inner_steps must be >= 1 or None, got {eval_inner_steps}")
        if update_rule == "ravi_larochelle" and not 0 < init_inner_lr < 1:
            raise ValueError(
                f"init_inner_lr must lie in (0, 1) (the update rule's input gate at initialisation), got {init_inner_lr}"
            )
        # the base network normalises with each task's batch statistics, as MAML does
        backbone = resolve_backbone(backbone, self.kind, track_running_stats=False)
        require_batch_statistics(backbone, "LearnedOptimizer")
        features = getattr(backbone, "out_features", None)
        if not isinstance(features, int) or features < 1:
            raise ValueError(
                f"backbone {type(backbone).__name__} must expose a positive int out_features (the feature width), got {features!r}"
            )
        self.backbone = backbone
        self.head = nn.Linear(features, self.output_dim)
        if update_rule == "ravi_larochelle":
            self.update_rule: MetaOptimizer = RaviLarochelleUpdate(
                init_input_gate=init_inner_lr, init_forget_bias=init_forget_bias, preprocess_p=preprocess_p
            )
        elif update_rule == "lstm":
            self.update_rule = CoordinatewiseLSTMOptimizer(
                hidden_size=lstm_hidden,
                num_layers=lstm_layers,
                preprocess_p=preprocess_p,
                output_scale=output_scale,
                learn_output_scale=learn_output_scale,
            )
        else:
            raise ValueError(f"update_rule must be 'ravi_larochelle' or 'lstm', got {update_rule!r}")
        self.inner_steps = inner_steps
        self.eval_inner_steps = eval_inner_steps if eval_inner_steps is not None else inner_steps
        self.second_order = second_order
        self.batch_tasks = batch_tasks
        self.query_bn = check_query_bn(query_bn)
        self.adapted = adapted

    @property
    def transductive(self) -> bool:
        """True when batch norm normalises the query batch (``query_bn="transductive"`` and batch norm in the backbone)."""
        return self.query_bn == "transductive" and bool(batch_norm_layers(self.backbone))

    # ------------------------------------------------------------------ base network
    def base_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The meta-learned initialisation ``theta_0`` as ``(name, parameter)`` pairs (backbone, then head).

        A frozen weight (``requires_grad=False``) is not among them: the inner loop leaves it as it is
        and :meth:`base_forward` reads it from the module. With ``adapted="head"`` only the head's
        weights are: the backbone is read from the module too.
        """
        named = [] if self.adapted == "head" else [("backbone." + n, p) for n, p in self.backbone.named_parameters()]
        named += [("head." + n, p) for n, p in self.head.named_parameters()]
        return [(n, p) for n, p in named if p.requires_grad]

    def base_forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        """The base network with weights ``params`` (ordered as :meth:`base_parameters`): ``[n, *x] -> [n, out]``."""
        values = dict(zip((n for n, _ in self.base_parameters()), params))
        backbone = {n[len("backbone.") :]: v for n, v in values.items() if n.startswith("backbone.")}
        return self.head_forward(params, functional_call(self.backbone, backbone, (x,)))

    def head_forward(self, params: list[Tensor], features: Tensor) -> Tensor:
        """The head with its weights from ``params`` (ordered as :meth:`base_parameters`): ``[n, E] -> [n, out]``."""
        values = dict(zip((n for n, _ in self.base_parameters()), params))
        head = {n[len("head.") :]: v for n, v in values.items() if n.startswith("head.")}
        return functional_call(self.head, head, (features,))

    def support_normalised_forward(self, params: list[Tensor], support_x: Tensor, x: Tensor) -> Tensor:
        """:meth:`base_forward` of ``x [n, *x]`` with batch norm using the statistics of ``support_x [S, *x]``."""
        n_support = support_x.shape[0]
        with reference_batch_norm(self.backbone, n_support):
            return self.base_forward(params, torch.cat([support_x, x]))[n_support:]

    def batched_forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        """:meth:`base_forward` of every task at once: ``params[i]`` is ``[B, *shape_i]``, ``x`` is
        ``[B, n, *x]``; returns ``[B, n, out]`` (``vmap`` over tasks; with ``adapted="head"`` the
        backbone, shared by every task, runs once outside it)."""
        if self.adapted == "head":
            return self.batched_head_forward(params, embed(self.backbone, x))
        return torch.func.vmap(self.base_forward)(params, x)

    def batched_head_forward(self, params: list[Tensor], features: Tensor) -> Tensor:
        """:meth:`head_forward` of every task at once: ``params[i]`` ``[B, *shape_i]``, ``features`` ``[B, n, E]``."""
        return torch.func.vmap(self.head_forward)(params, features)

    def runs_tasks_batched(self) -> bool:
        """Whether :meth:`adapt` runs all tasks at once (``batch_tasks`` and no batch norm)."""
        return self.batch_tasks and not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in self.modules())

    def _inner_loss(self, preds: Tensor, y: Tensor) -> Tensor:
        return self.task_losses(preds.unsqueeze(0), y.unsqueeze(0)).squeeze(0)

    # ------------------------------------------------------------------ inner loop
    def adapt_task(self, support_x: Tensor, support_y: Tensor, steps: int, meta_graph: bool) -> list[Tensor]:
        """Train the base network on one task's support set; return the adapted weights.

        Args:
            support_x: ``[S, *x]``.
            support_y: ``[S]`` or ``[S, d_y]``.
            steps: inner-loop steps.
            meta_graph: keep the graph from the adapted weights back to ``theta_0`` and the rule's
                parameters (training); otherwise every step is cut from the graph.
        """
        params = [p if meta_graph else p.detach().requires_grad_() for _, p in self.base_parameters()]
        forward = self._support_forward(support_x, meta_graph, batched=False)
        return self._inner_loop(
            params, lambda ps: self._inner_loss(forward(ps), support_y), lambda loss: loss, steps, meta_graph
        )

    def _support_forward(self, support_x: Tensor, meta_graph: bool, batched: bool) -> Callable[[list[Tensor]], Tensor]:
        """``params -> preds`` on the support set, for the inner loop: the base network (of every task at once when
        ``batched``), or with ``adapted="head"`` the head alone on the backbone's features, computed here once."""
        if self.adapted == "head":
            with torch.set_grad_enabled(meta_graph):
                features = embed(self.backbone, support_x) if batched else self.backbone(support_x)
            return partial(self.batched_head_forward if batched else self.head_forward, features=features)
        return partial(self.batched_forward if batched else self.base_forward, x=support_x)

    def _inner_loop(
        self,
        params: list[Tensor],
        support_losses: Callable[[list[Tensor]], Tensor],
        rule_loss: Callable[[Tensor], Tensor],
        steps: int,
        meta_graph: bool,
    ) -> list[Tensor]:
        """``steps`` updates of ``params`` by the learned rule on the support loss(es).

        ``support_losses(params)`` gives one loss per task (or a scalar for one task; their sum is
        differentiated, so each task gets its own gradient) and ``rule_loss`` turns those losses
        into what the rule reads (one per coordinate for several tasks).
        """
        second = meta_graph and self.second_order
        state = self.update_rule.init(params)
        for _ in range(steps):
            losses = support_losses(params)
            grads = torch.autograd.grad(losses.sum(), params, create_graph=second)
            loss_in = rule_loss(losses if second else losses.detach())
            with torch.set_grad_enabled(meta_graph):
                updates, state = self.update_rule.update(list(grads), state, params, loss_in)
                params = apply_updates(params, updates)
            if not meta_graph:
                params = [p.requires_grad_() for p in params]
        return params if meta_graph else [p.detach() for p in params]

    def adapt_tasks(self, support_x: Tensor, support_y: Tensor, steps: int, meta_graph: bool) -> list[Tensor]:
        """:meth:`adapt_task` for all ``B`` tasks at once; returns the adapted weights ``[B, *shape]``.

        Arguments as :meth:`adapt_task`, with a leading task dimension ``B`` on ``support_x`` and
        ``support_y``. Every task starts from ``theta_0`` (expanded, so the meta-gradient sums over
        tasks); one backward of the summed support losses gives each task its own gradient, and one
        call of the coordinatewise rule updates every task, each coordinate reading its own task's loss.
        """
        n_tasks = support_x.shape[0]
        base = [p for _, p in self.base_parameters()]
        if meta_graph:
            params = [p.expand(n_tasks, *p.shape) for p in base]
        else:
            params = [p.detach().expand(n_tasks, *p.shape).clone().requires_grad_() for p in base]

        def per_coordinate(losses: Tensor) -> Tensor:  # one loss per coordinate, in the rule's flattening order
            return torch.cat([losses[:, None].expand(n_tasks, p.numel()).reshape(-1) for p in base])

        forward = self._support_forward(support_x, meta_graph, batched=True)
        return self._inner_loop(
            params,
            lambda ps: self.task_losses(forward(ps), support_y),
            per_coordinate,
            steps,
            meta_graph,
        )

    def adapt(self, support_x: Tensor, support_y: Tensor) -> LearnedOptimizerPredictor:
        """Run the inner loop on every task; return a predictor ``query_x [B, M, *x] -> preds``."""
        self.check_inputs(support_x, support_y)
        meta_graph = self.training and torch.is_grad_enabled()
        steps = self.inner_steps if self.training else self.eval_inner_steps
        with torch.inference_mode(False), torch.enable_grad():
            if support_x.is_inference():
                support_x, support_y = support_x.clone(), support_y.clone()
            if self.runs_tasks_batched():
                batched = self.adapt_tasks(support_x, support_y, steps, meta_graph)
                return LearnedOptimizerPredictor(self, batched, meta_graph, support_x[:, :0], batched=True)
            adapted = [self.adapt_task(sx, sy, steps, meta_graph) for sx, sy in zip(support_x, support_y)]
        normalise_with = support_x if self.query_bn == "support" and batch_norm_layers(self.backbone) else None
        return LearnedOptimizerPredictor(self, adapted, meta_graph, support_x[:, :0], support_x=normalise_with)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        check_query(support_x, query_x)
        return self.adapt(support_x, support_y)(query_x)
