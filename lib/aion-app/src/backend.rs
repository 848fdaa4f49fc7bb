//! The only place a burn device is chosen: CPU (NdArray) or LibTorch (CPU or CUDA, feature
//! `tch`), and the CPU thread budget of a rank.
//!
//! Tools are generic over the backend; [`dispatch`] runs a [`BackendTask`] (for a tool:
//! [`crate::cli::Tool::run`]) with the backend and device chosen by `--device`. Each rank uses GPU `SLURM_LOCALID` (or its MPI node-local rank)
//! unless `--device cuda:N` names one.

use std::str::FromStr;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use clap::Args;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// burn's NdArray backend on the CPU (default; no LibTorch needed).
    Cpu,
    /// LibTorch on the CPU.
    TchCpu,
    /// LibTorch on a CUDA GPU: `Some(i)` = that GPU, `None` = the rank's node-local index.
    Cuda(Option<usize>),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "tch-cpu" => Ok(Self::TchCpu),
            "cuda" => Ok(Self::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(|i| Self::Cuda(Some(i)))
                .ok_or_else(|| format!("unknown device '{s}' (cpu, tch-cpu, cuda, cuda:N)")),
        }
    }
}

/// Floating-point precision of the model on LibTorch devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Precision {
    /// 32-bit floats everywhere (default; the only choice on `cpu`).
    F32,
    /// bfloat16 weights and activations (CUDA, and CPUs with AVX-512 BF16 or AMX).
    Bf16,
    /// float16 weights and activations (CUDA; refused on `tch-cpu`, which has no f16 kernels).
    F16,
}

/// Compute options shared by the model tools.
#[derive(Debug, Clone, Args)]
pub struct ComputeArgs {
    /// `cpu` (NdArray), `tch-cpu`, `cuda` (GPU = node-local rank) or `cuda:N`. LibTorch devices
    /// need a build with `--features tch`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,

    /// Model precision on LibTorch devices.
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,

    /// CPU threads per rank.
    #[arg(long, value_name = "N",
        help = crate::args::with_default("CPU threads per rank", &crate::args::threads_default()))]
    pub threads: Option<usize>,
}

impl ComputeArgs {
    /// `--device` and `--precision` ([`crate::cli::ToolArgs::device`] of the model tools).
    pub fn device(&self) -> Result<(DeviceChoice, Precision)> {
        Ok((self.device, self.precision))
    }

    /// This rank's thread budget ([`crate::cli::ToolArgs::threads`] of the model tools).
    pub fn thread_budget(&self) -> usize {
        thread_budget_from_env(self.threads)
    }
}

/// A piece of work generic over the backend.
pub trait BackendTask {
    /// What it returns.
    type Output;
    /// Runs on backend `B` and `device`.
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output>;
}

/// Runs `task` on the backend of `device` and `precision` (`local_rank` picks the GPU for
/// `cuda`). [`crate::cli::main`] calls it for every tool.
pub fn dispatch<T: BackendTask>(
    device: DeviceChoice,
    precision: Precision,
    local_rank: usize,
    task: T,
) -> Result<T::Output> {
    match (device, precision) {
        (DeviceChoice::Cpu, Precision::F32) => {
            task.run::<burn::backend::NdArray<f32>>(Default::default())
        }
        (DeviceChoice::Cpu, p) => {
            bail!("--precision {p:?} needs a LibTorch device (--device tch-cpu or cuda)")
        }
        (DeviceChoice::TchCpu, Precision::F16) => {
            bail!(
                "--precision f16 on tch-cpu: CPUs have no fast float16 kernels (LibTorch emulates \
                 them, tens of times slower than f32); use --precision bf16 (fast on CPUs with \
                 AVX-512 BF16 or AMX) or f32"
            )
        }
        #[cfg(feature = "tch")]
        (d, p) => {
            use burn::backend::libtorch::{LibTorch, LibTorchDevice};
            let device = match d {
                DeviceChoice::Cuda(i) => {
                    if !tch::Cuda::is_available() {
                        bail!("--device cuda: no CUDA device is visible to LibTorch");
                    }
                    let visible = tch::Cuda::device_count().max(1) as usize;
                    let gpu = i.unwrap_or(local_rank % visible);
                    log::info!(
                        "LibTorch device cuda:{gpu} (node-local rank {local_rank}, {visible} GPU(s) visible)"
                    );
                    LibTorchDevice::Cuda(gpu)
                }
                _ => LibTorchDevice::Cpu,
            };
            if matches!((d, p), (DeviceChoice::TchCpu, Precision::F32)) {
                // Ours or MKL's f32 product, whichever is faster on this CPU, timed now before
                // the pipeline's threads start (`--log-level debug` prints both rates).
                aion_model::nn::native::cpu_gemm_is_ours();
            }
            match p {
                Precision::F32 => task.run::<LibTorch<f32>>(device),
                Precision::Bf16 => task.run::<LibTorch<half::bf16>>(device),
                Precision::F16 => task.run::<LibTorch<half::f16>>(device),
            }
        }
        #[cfg(not(feature = "tch"))]
        (d, _) => {
            let _ = local_rank;
            bail!(
                "--device {d:?} needs LibTorch: rebuild with `cargo build --release --features tch`"
            )
        }
    }
}

/// Threads this rank should use: `--threads`, else `SLURM_CPUS_PER_TASK`, else the node's
/// cores divided by the ranks on the node.
pub fn thread_budget(
    threads: Option<usize>,
    ranks_on_node: usize,
    slurm_cpus: Option<u32>,
) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads
        .or(slurm_cpus.map(|c| c as usize))
        .unwrap_or(cores / ranks_on_node.max(1))
        .max(1)
}

/// [`thread_budget`] from the launcher's environment, before MPI is initialised: ranks on this
/// node from `OMPI_COMM_WORLD_LOCAL_SIZE` (mpirun), `MPI_LOCALNRANKS` (MPICH) or
/// `SLURM_STEP_TASKS_PER_NODE` (srun), else 1.
pub fn thread_budget_from_env(threads: Option<usize>) -> usize {
    let var = |k: &str| std::env::var(k).ok();
    let local = var("OMPI_COMM_WORLD_LOCAL_SIZE")
        .or_else(|| var("MPI_LOCALNRANKS"))
        .or_else(|| {
            var("SLURM_STEP_TASKS_PER_NODE")
                .map(|s| s.split(['(', ',']).next().unwrap_or("1").to_string())
        })
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1);
    let slurm_cpus = var("SLURM_CPUS_PER_TASK").and_then(|s| s.parse().ok());
    thread_budget(threads, local, slurm_cpus)
}

/// glibc's allocator settings for a process whose memory is a few large tensors, allocated and
/// freed again for every layer: one arena (`M_ARENA_MAX` 1), large blocks from the heap rather
/// than from fresh `mmap`s (`M_MMAP_MAX` 0), and freed memory kept rather than given back to the
/// kernel (`M_TRIM_THRESHOLD` 2 GiB). By default every tensor above 32 MiB was a new `mmap` whose
/// pages the kernel zeroed on first touch (10 of the 54 CPU seconds of a base-size encoder run,
/// as system time), and the threads' own arenas gave their memory back after each product.
/// Measured (docs/validation.md): encoder −24 % wall, peak memory unchanged, because the same
/// sizes repeat chunk after chunk. A setting whose `MALLOC_*` variable is set (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_`) is left to that variable; `AION_SYSTEM_MALLOC=1`
/// keeps glibc's defaults for all three. Call first in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    if std::env::var_os("AION_SYSTEM_MALLOC").is_some_and(|v| v != "0") {
        return;
    }
    let settings = [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
        ("MALLOC_MMAP_MAX_", libc::M_MMAP_MAX, 0),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, i32::MAX),
    ];
    for (variable, parameter, value) in settings {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only changes the allocator's tuning parameters (glibc takes its
            // own lock); a refused value leaves the default, which is only slower.
            unsafe { libc::mallopt(parameter, value) };
        }
    }
}

/// Other C libraries keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Sets the CPU thread pools (rayon, matrixmultiply, LibTorch) to `threads`. Call first in
/// `main`, before MPI or anything else starts a thread.
#[allow(unsafe_code)]
pub fn set_threads(threads: usize) {
    // SAFETY: called at the start of main, before any other thread is spawned, so no thread
    // can read the environment concurrently. matrixmultiply reads MATMUL_NUM_THREADS lazily at
    // its first product and offers no other way to set its pool size.
    unsafe {
        std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    }
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    #[cfg(feature = "tch")]
    tch::set_num_threads(threads as i32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(None)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(Some(3))));
        assert!("gpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn thread_budget_prefers_flags_then_slurm() {
        assert_eq!(thread_budget(Some(3), 4, Some(8)), 3);
        assert_eq!(thread_budget(None, 4, Some(8)), 8);
        assert!(thread_budget(None, 1_000_000, None) >= 1);
    }
}
