//! `--device` names to Burn devices. flex (pure-Rust CPU) is always built; the others exist when
//! the binary was built with the matching cargo feature.

use anyhow::{bail, Result};
use burn::tensor::Device;

pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "tch")]
        "tch" => {
            #[allow(deprecated)]
            Ok(Device::libtorch())
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        "tch" | "wgpu" | "cuda" => bail!("device {name:?}: this binary was built without the `{name}` feature (cargo build --release --features {name})"),
        other => bail!("device {other:?}: unknown (expected cpu, wgpu, tch or cuda)"),
    }
}
