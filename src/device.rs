//! `--device` names to Burn devices. flex (pure-Rust CPU) is always built; the others exist when
//! the binary was built with the matching cargo feature. A device that is not compiled in, or
//! whose runtime does not answer (no GPU adapter, no CUDA driver), is one error line saying how to
//! get it, before any work starts.

use anyhow::{bail, Result};
use burn::tensor::{Device, Tensor};

/// How to get each optional device, for the error when it is missing.
fn how_to_build(name: &str) -> &'static str {
    match name {
        "tch" => "run scripts/setup-libtorch.sh, `source .libtorch/env.sh`, then `cargo build --release --features tch`",
        "wgpu" => "`cargo build --release --features wgpu` (needs a Vulkan, Metal or DX12 GPU driver at run time)",
        _ => "`cargo build --release --features cuda` (needs an NVIDIA GPU and its driver at run time)",
    }
}

/// A comma-separated list of devices (`cuda:0,cuda:1`, `cpu,tch`): the first holds the model,
/// the others take replicas of each step (data parallelism over devices).
pub fn parse_devices(list: &str) -> Result<Vec<Device>> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        bail!("--device {list:?}: an empty name in the list");
    }
    names.iter().map(|n| parse_device(n)).collect()
}

pub fn parse_device(name: &str) -> Result<Device> {
    if name.contains(',') {
        bail!("device {name:?}: a list of devices trains one model data-parallel (rmtrain train, single and WARM recipes); this takes one device");
    }
    if let Some(index) = name.strip_prefix("cuda:") {
        let Ok(i) = index.parse::<usize>() else { bail!("device {name:?}: expected cuda:N with N a GPU index") };
        return match cuda_device(i) {
            Some(device) => probe(name, device),
            None => bail!("device {name:?}: this binary was built without cuda; to get it: {}", how_to_build("cuda")),
        };
    }
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        "tch" | "wgpu" | "cuda" => match compiled_in(name) {
            Some(device) => probe(name, device),
            None => bail!("device {name:?}: this binary was built without it; to get it: {}", how_to_build(name)),
        },
        other => bail!("device {other:?}: unknown (expected cpu, tch, wgpu or cuda)"),
    }
}

/// GPU `index` of the cuda backend, if this binary was built with it.
fn cuda_device(index: usize) -> Option<Device> {
    #[cfg(feature = "cuda")]
    return Some(Device::cuda(index));
    #[cfg(not(feature = "cuda"))]
    {
        let _ = index;
        None
    }
}

/// The optional device of that name, if this binary was built with it.
fn compiled_in(name: &str) -> Option<Device> {
    match name {
        #[cfg(feature = "tch")]
        "tch" => {
            // libtorch frees and reallocates large tensors every step (see the module's note)
            rmtrain_core::heap::keep_freed_memory();
            #[allow(deprecated)]
            Some(Device::libtorch())
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => Some(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        "cuda" => cuda_device(0),
        _ => None,
    }
}

/// Run one tiny op on the device. Burn's GPU runtimes panic when no adapter or driver is found;
/// that panic becomes one error line here instead of a backtrace in the middle of a run.
fn probe(name: &str, device: Device) -> Result<Device> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let answer = std::panic::catch_unwind(|| Tensor::<1>::from_floats([1.0, 2.0], &device).sum().into_scalar::<f32>());
    std::panic::set_hook(hook);
    match answer {
        Ok(3.0) => Ok(device),
        Ok(s) => bail!("device {name:?}: a test sum 1 + 2 gave {s}"),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the runtime panicked");
            bail!("device {name:?} does not run here ({}); to get it: {}", why.replace('\n', " "), how_to_build(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_unknown_names_are_one_line_errors() {
        assert!(parse_device("cpu").is_ok());
        let e = parse_device("tpu").expect_err("unknown").to_string();
        assert!(e.contains("unknown") && !e.contains('\n'), "{e}");
        let e = parse_device("cpu,cpu").expect_err("a list where one device is taken").to_string();
        assert!(e.contains("this takes one device") && !e.contains('\n'), "{e}");
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn a_device_not_compiled_in_says_how_to_get_it() {
        let e = parse_device("wgpu").expect_err("not built").to_string();
        assert!(e.contains("--features wgpu") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn device_lists_and_gpu_indices() {
        assert_eq!(parse_devices("cpu, cpu").expect("two").len(), 2);
        let e = parse_devices("cpu,").expect_err("empty").to_string();
        assert!(e.contains("an empty name"), "{e}");
        let e = parse_devices("cpu,tpu").expect_err("unknown").to_string();
        assert!(e.contains("\"tpu\": unknown"), "{e}");
        let e = parse_device("cuda:x").expect_err("not an index").to_string();
        assert!(e.contains("cuda:N"), "{e}");
        #[cfg(not(feature = "cuda"))]
        assert!(parse_device("cuda:1").expect_err("not built").to_string().contains("built without cuda"));
    }

    #[cfg(feature = "tch")]
    #[test]
    fn tch_answers_a_probe() {
        parse_device("tch").expect("tch runs here");
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn tch_not_compiled_in_points_at_the_setup_script() {
        let e = parse_device("tch").expect_err("not built").to_string();
        assert!(e.contains("scripts/setup-libtorch.sh"), "{e}");
    }
}
