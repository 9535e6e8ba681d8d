//! Prints weft's CRDs as YAML on stdout (`cargo run -p weft-crds --bin weft-crdgen > crd.yaml`).
//! The committed copy is kept current by the `crd_golden` test; this binary is for pipelines.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match weft_crds::crd::render_crd_yaml() {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(yaml.as_bytes()) {
                eprintln!("weft-crdgen: failed to write the CRD: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
