//! Element-wise figures (memory-bound): ReLU forward and backward, add, bias add and the
//! bias gradient, softmax cross-entropy (loss and gradient), and the SGD-with-momentum
//! and Adam updates.
//!
//! Bytes (4 per element, n elements): ReLU forward 2n (x in, y out); ReLU backward 3n
//! (y, dy in, dx out); add 3n; bias add 2·rows·C + C; bias gradient rows·C + C; softmax
//! cross-entropy reads logits [B, classes] and labels, writes the gradient
//! [B, classes], per-row loss, argmax and label rank, the mean loss and two hit counts:
//! 2·B·classes + 4·B + 3; SGD with momentum reads param, grad, momentum and writes
//! param, momentum (5n); Adam reads param, grad, m, v and writes param, m, v (7n).

use anyhow::Result;
use wgtrain_device::Gpu;
use wgtrain_device::kernels::elementwise::{BiasAdd, Binary, Relu};
use wgtrain_device::kernels::optimizer::{Adam, Sgd};
use wgtrain_device::kernels::softmax_xent::{SoftmaxCrossEntropy, SoftmaxXentBuffers};
use wgtrain_device::reference::{elementwise as ew_ref, optimizer as opt_ref, softmax_xent};

use super::memory_figure;
use crate::bench::data::{
    check, check_exact, download, labels, nan_buffer, narrow, random, run_once, upload_random,
    widen, zeroed,
};
use crate::bench::harness::{Bench, Part, Workload};

/// Elements of the element-wise validation runs: not a multiple of any workgroup size.
const SMALL: u32 = 1000 + 37;

/// An element-wise op with `inputs` random inputs of `count` elements and one output.
#[derive(Clone, Copy, Debug)]
enum Op {
    ReluForward,
    ReluBackward,
    Add,
}

impl Op {
    fn inputs(self) -> usize {
        match self {
            Op::ReluForward => 1,
            Op::ReluBackward | Op::Add => 2,
        }
    }

    fn dispatch(
        self,
        gpu: &Gpu,
        count: u32,
        ins: &[&wgpu::Buffer],
        out: &wgpu::Buffer,
    ) -> Result<wgtrain_device::Dispatch> {
        Ok(match self {
            Op::ReluForward => Relu { count }.prepare(gpu, ins[0], out)?,
            Op::ReluBackward => Relu { count }.prepare_backward(gpu, ins[0], ins[1], out)?,
            Op::Add => Binary::add(count).prepare(gpu, ins[0], ins[1], out)?,
        })
    }

    fn reference(self, count: u32, ins: &[Vec<f64>]) -> Vec<f64> {
        match self {
            Op::ReluForward => ew_ref::relu(&Relu { count }, &ins[0]),
            Op::ReluBackward => ew_ref::relu_backward(&Relu { count }, &ins[0], &ins[1]),
            Op::Add => ew_ref::binary(&Binary::add(count), &ins[0], &ins[1]),
        }
    }
}

fn validate_op(gpu: &Gpu, op: Op) -> Result<f64> {
    let ins: Vec<Vec<f32>> = (0..op.inputs())
        .map(|i| random(SMALL as usize, 51 + i as u64))
        .collect();
    let bufs = ins
        .iter()
        .map(|v| gpu.upload(v, "bench.in"))
        .collect::<Result<Vec<_>, _>>()?;
    let out = nan_buffer(gpu, SMALL as u64)?;
    let refs: Vec<&wgpu::Buffer> = bufs.iter().map(|b| &**b).collect();
    let d = op.dispatch(gpu, SMALL, &refs, &out)?;
    run_once(gpu, &[&d])?;
    let want = narrow(&op.reference(SMALL, &ins.iter().map(|v| widen(v)).collect::<Vec<_>>()));
    check(
        &format!("{op:?}"),
        &download(gpu, &out, SMALL as u64)?,
        &want,
    )
}

fn prepare_op(gpu: &Gpu, op: Op, count: u32) -> Result<Workload> {
    let mut bufs = (0..op.inputs())
        .map(|i| upload_random(gpu, count as u64, 55 + i as u64))
        .collect::<Result<Vec<_>>>()?;
    let out = gpu.pool().acquire(count as u64 * 4, "bench.out")?;
    let d = {
        let refs: Vec<&wgpu::Buffer> = bufs.iter().map(|b| &**b).collect();
        op.dispatch(gpu, count, &refs, &out)?
    };
    bufs.push(out);
    Ok(Workload::one(d, bufs))
}

fn elementwise(bench: &mut Bench, name: &str, op: Op) {
    let n = bench.sizes.elems;
    let bytes = 4.0 * (op.inputs() + 1) as f64 * n as f64;
    memory_figure(
        bench,
        format!("{name}_{n}"),
        format!("{op:?} over {n} elements"),
        bytes,
        |gpu| validate_op(gpu, op),
        |gpu| prepare_op(gpu, op, n),
    );
}

fn validate_bias(gpu: &Gpu, p: &BiasAdd, grad: bool) -> Result<f64> {
    let len = p.rows as u64 * p.c as u64;
    let x = random(len as usize, 61);
    let bias = random(p.c as usize, 62);
    let (dx_in, dbias) = (gpu.upload(&x, "bench.x")?, gpu.upload(&bias, "bench.b")?);
    if grad {
        let scratch = zeroed(gpu, p.grad_scratch_elems())?;
        let db = nan_buffer(gpu, p.c as u64)?;
        let ds = p.prepare_grad(gpu, &dx_in, Some(&scratch), &db, false)?;
        run_once(gpu, &ds.iter().collect::<Vec<_>>())?;
        let want = narrow(&ew_ref::bias_grad(p, &widen(&x), &vec![0.0; p.c as usize]));
        return check("bias gradient", &download(gpu, &db, p.c as u64)?, &want);
    }
    let y = nan_buffer(gpu, len)?;
    let d = p.prepare(gpu, &dx_in, &dbias, &y)?;
    run_once(gpu, &[&d])?;
    let want = narrow(&ew_ref::bias_add(p, &widen(&x), &widen(&bias)));
    check("bias add", &download(gpu, &y, len)?, &want)
}

fn prepare_bias(gpu: &Gpu, p: &BiasAdd, grad: bool) -> Result<Workload> {
    let len = p.rows as u64 * p.c as u64;
    let x = upload_random(gpu, len, 63)?;
    if grad {
        let scratch = zeroed(gpu, p.grad_scratch_elems())?;
        let db = gpu.pool().acquire(p.c as u64 * 4, "bench.db")?;
        let ds = p.prepare_grad(gpu, &x, Some(&scratch), &db, false)?;
        return Ok(Workload::new(vec![Part::Many(ds)], vec![x, scratch, db]));
    }
    let bias = upload_random(gpu, p.c as u64, 64)?;
    let y = gpu.pool().acquire(len * 4, "bench.y")?;
    let d = p.prepare(gpu, &x, &bias, &y)?;
    Ok(Workload::one(d, vec![x, bias, y]))
}

/// Bias add and its gradient over ResNet-50's 56 × 56 × 256 activations.
fn bias(bench: &mut Bench) {
    let (n, h, c) = (bench.sizes.batch, 56, 256);
    let p = BiasAdd::new(n * h * h, c);
    let small = BiasAdd::new(300, c);
    let (rc, c64) = (p.rows as f64 * c as f64, c as f64);
    let shape = format!("x[{n},{h},{h},{c}] (+) bias[{c}]");
    for (name, grad, bytes) in [
        ("bias_add", false, 4.0 * (2.0 * rc + c64)),
        ("bias_grad", true, 4.0 * (rc + c64)),
    ] {
        memory_figure(
            bench,
            format!("{name}_resnet50_{h}x{h}x{c}_n{n}"),
            shape.clone(),
            bytes,
            |gpu| validate_bias(gpu, &small, grad),
            |gpu| prepare_bias(gpu, &p, grad),
        );
    }
}

/// The softmax cross-entropy buffers, owned.
struct XentBuffers(Vec<wgtrain_device::PooledBuffer>);

impl XentBuffers {
    fn new(gpu: &Gpu, p: &SoftmaxCrossEntropy, logits: &[f32], labels: &[u32]) -> Result<Self> {
        let (n, elems) = (p.n as u64, p.n as u64 * p.classes as u64);
        Ok(XentBuffers(vec![
            gpu.upload(logits, "bench.logits")?,
            gpu.upload(labels, "bench.labels")?,
            nan_buffer(gpu, elems)?,
            nan_buffer(gpu, n)?,
            nan_buffer(gpu, n)?,
            nan_buffer(gpu, n)?,
            nan_buffer(gpu, 1)?,
            nan_buffer(gpu, 2)?,
        ]))
    }

    fn bind(&self) -> SoftmaxXentBuffers<'_> {
        let b = &self.0;
        SoftmaxXentBuffers {
            logits: &b[0],
            labels: &b[1],
            dlogits: Some(&b[2]),
            row_loss: &b[3],
            argmax: &b[4],
            label_rank: &b[5],
            loss: &b[6],
            correct: &b[7],
        }
    }
}

fn xent_inputs(p: &SoftmaxCrossEntropy, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let logits = random((p.n * p.classes) as usize, seed)
        .iter()
        .map(|v| 4.0 * v)
        .collect();
    (logits, labels(p.n as usize, p.classes, seed + 1))
}

fn validate_xent(gpu: &Gpu, p: &SoftmaxCrossEntropy) -> Result<f64> {
    let (logits, labels) = xent_inputs(p, 71);
    let bufs = XentBuffers::new(gpu, p, &logits, &labels)?;
    let ds = p.prepare(gpu, &bufs.bind())?;
    run_once(gpu, &ds.iter().collect::<Vec<_>>())?;
    let want = softmax_xent::softmax_xent(p, &widen(&logits), &labels);
    let b = &bufs.0;
    let (n, elems) = (p.n as u64, p.n as u64 * p.classes as u64);
    let e1 = check(
        "softmax xent dlogits",
        &download(gpu, &b[2], elems)?,
        &narrow(&want.dlogits),
    )?;
    let e2 = check(
        "softmax xent row loss",
        &download(gpu, &b[3], n)?,
        &narrow(&want.row_loss),
    )?;
    let e3 = check(
        "softmax xent loss",
        &download(gpu, &b[6], 1)?,
        &[want.loss as f32],
    )?;
    let argmax: Vec<u32> = gpu.download(&b[4], n as usize)?;
    check_exact("softmax xent argmax", &argmax, &want.argmax)?;
    Ok(e1.max(e2).max(e3))
}

fn prepare_xent(gpu: &Gpu, p: &SoftmaxCrossEntropy) -> Result<Workload> {
    let (logits, labels) = xent_inputs(p, 73);
    let bufs = XentBuffers::new(gpu, p, &logits, &labels)?;
    let ds = p.prepare(gpu, &bufs.bind())?;
    Ok(Workload::new(vec![Part::Many(ds)], bufs.0))
}

fn xent(bench: &mut Bench) {
    let p = SoftmaxCrossEntropy::new(bench.sizes.fc_batch, 1000);
    let small = SoftmaxCrossEntropy::new(p.n.min(8), p.classes);
    let (b, k) = (p.n as f64, p.classes as f64);
    memory_figure(
        bench,
        format!("softmax_xent_{}x{}", p.n, p.classes),
        format!("mean loss + gradient of logits[{}, {}]", p.n, p.classes),
        4.0 * (2.0 * b * k + 4.0 * b + 3.0),
        |gpu| validate_xent(gpu, &small),
        |gpu| prepare_xent(gpu, &p),
    );
}

/// An optimizer under test: SGD with momentum 0.9 or Adam, both at step 2 (the
/// momentum and moment buffers are read, as in every step after the first).
#[derive(Clone, Copy, Debug)]
enum Optimizer {
    SgdMomentum,
    Adam,
}

impl Optimizer {
    fn state_buffers(self) -> usize {
        match self {
            Optimizer::SgdMomentum => 1,
            Optimizer::Adam => 2,
        }
    }

    /// The dispatch over `param`, `grad` and the state, set up for `step`.
    fn dispatch(
        self,
        gpu: &Gpu,
        count: u32,
        b: &[&wgpu::Buffer],
        step: u32,
    ) -> Result<wgtrain_device::Dispatch> {
        Ok(match self {
            Optimizer::SgdMomentum => {
                let sgd = Sgd::new(count, 0.01).with_momentum(0.9);
                let d = sgd.prepare(gpu, b[0], b[1], Some(b[2]))?;
                sgd.write_step(gpu, &d, step, sgd.lr)?;
                d
            }
            Optimizer::Adam => {
                let adam = Adam::new(count, 1e-3);
                let d = adam.prepare(gpu, b[0], b[1], b[2], b[3])?;
                adam.write_step(gpu, &d, step, adam.lr)?;
                d
            }
        })
    }
}

/// Two steps on the GPU (step 1, then step 2 from the state step 1 left) against two
/// reference steps.
fn validate_optimizer(gpu: &Gpu, opt: Optimizer) -> Result<f64> {
    let (param, grad) = (random(SMALL as usize, 81), random(SMALL as usize, 82));
    let mut bufs = vec![gpu.upload(&param, "p")?, gpu.upload(&grad, "g")?];
    for _ in 0..opt.state_buffers() {
        bufs.push(zeroed(gpu, SMALL as u64)?);
    }
    let refs: Vec<&wgpu::Buffer> = bufs.iter().map(|b| &**b).collect();
    let step1 = opt.dispatch(gpu, SMALL, &refs, 1)?;
    run_once(gpu, &[&step1])?;
    let step2 = opt.dispatch(gpu, SMALL, &refs, 2)?;
    run_once(gpu, &[&step2])?;
    let mut p = widen(&param);
    let mut s: Vec<Vec<f64>> = vec![vec![0.0; SMALL as usize]; 2];
    for step in 1..=2 {
        let [s0, s1] = &mut s[..] else { unreachable!() };
        match opt {
            Optimizer::SgdMomentum => {
                let sgd = Sgd::new(SMALL, 0.01).with_momentum(0.9);
                opt_ref::sgd_step(&sgd, step, sgd.lr, &mut p, &grad, s0);
            }
            Optimizer::Adam => {
                let adam = Adam::new(SMALL, 1e-3);
                opt_ref::adam_step(&adam, step, adam.lr, &mut p, &grad, s0, s1);
            }
        }
    }
    let mut err = check(
        &format!("{opt:?} param"),
        &download(gpu, &bufs[0], SMALL as u64)?,
        &narrow(&p),
    )?;
    for (i, state) in s.iter().take(opt.state_buffers()).enumerate() {
        let got = download(gpu, &bufs[2 + i], SMALL as u64)?;
        err = err.max(check(&format!("{opt:?} state {i}"), &got, &narrow(state))?);
    }
    Ok(err)
}

fn prepare_optimizer(gpu: &Gpu, opt: Optimizer, count: u32) -> Result<Workload> {
    let mut bufs = vec![
        upload_random(gpu, count as u64, 83)?,
        upload_random(gpu, count as u64, 84)?,
    ];
    for i in 0..opt.state_buffers() {
        // Moments start positive (v must be, for Adam's square root to mean anything).
        let state: Vec<f32> = random(count as usize, 85 + i as u64)
            .iter()
            .map(|v| v.abs() * 1e-3)
            .collect();
        bufs.push(gpu.upload(&state, "bench.state")?);
    }
    let d = {
        let refs: Vec<&wgpu::Buffer> = bufs.iter().map(|b| &**b).collect();
        opt.dispatch(gpu, count, &refs, 2)?
    };
    Ok(Workload::one(d, bufs))
}

fn optimizer(bench: &mut Bench, name: &str, opt: Optimizer) {
    let n = bench.sizes.elems;
    let words = 2 * (1 + opt.state_buffers()) + 1;
    memory_figure(
        bench,
        format!("{name}_{n}"),
        format!("{opt:?} update (step 2) of {n} parameters, in place"),
        4.0 * words as f64 * n as f64,
        |gpu| validate_optimizer(gpu, opt),
        |gpu| prepare_optimizer(gpu, opt, n),
    );
}

pub fn run(bench: &mut Bench) {
    elementwise(bench, "relu_fwd", Op::ReluForward);
    elementwise(bench, "relu_bwd", Op::ReluBackward);
    elementwise(bench, "add", Op::Add);
    bias(bench);
    xent(bench);
    optimizer(bench, "sgd_momentum", Optimizer::SgdMomentum);
    optimizer(bench, "adam", Optimizer::Adam);
}
