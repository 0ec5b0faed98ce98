//! `p2pctl keygen`: a new publisher key.

use crate::{Failure, fail, print_json};
use api::cli::ExitCode;
use protocol::PublisherKey;
use std::path::PathBuf;
use store::identity;

/// Writes a new publisher key and prints its public half.
pub(crate) fn keygen(out: PathBuf, json: bool) -> Result<(), Failure> {
    let key = identity::generate().map_err(|e| fail(ExitCode::Failed, e.to_string()))?;
    identity::write_key(&out, &key).map_err(|e| fail(ExitCode::Failed, e.to_string()))?;
    let public = PublisherKey(key.verifying_key().to_bytes()).to_config_string();
    if json {
        print_json(&serde_json::json!({ "file": out, "public_key": public }));
    } else {
        crate::outln!("wrote {}", out.display());
        crate::outln!("add to p2pd.toml on every node that should trust it:\n");
        crate::outln!("[[trust.publishers]]\nname = \"release-team\"\nkey = \"{public}\"");
    }
    Ok(())
}
