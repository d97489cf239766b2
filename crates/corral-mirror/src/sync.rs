//! `corral mirror sync --from URL`: copy releases from an upstream mirror, verifying each.

use anyhow::{anyhow, Context};

use crate::fetch::Fetcher;
use crate::release::{self, Manifest};
use crate::store::{temp_name, Store};

/// What to copy.
pub struct SyncRequest {
    /// Base URL of the upstream tree (e.g. `https://mirror.corp.example` or `…/corral`).
    pub from: String,
    /// Versions to copy; empty means "whatever the upstream channels point at".
    pub versions: Vec<String>,
    /// Platforms to copy; empty means all.
    pub platforms: Vec<String>,
    /// Also write `{binary}.sha256` files (corral's own tree).
    pub checksum_files: bool,
}

/// What happened, for the summary line.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub downloaded: usize,
    pub already_present: usize,
    pub versions: Vec<String>,
    pub channels: Vec<(String, String)>,
}

/// Copies the requested releases into `store`. Each binary is checked against the upstream
/// manifest before it is placed; the local manifest is written only after every binary of
/// its version is in place.
pub async fn sync(
    store: &Store,
    fetcher: &Fetcher,
    req: &SyncRequest,
) -> anyhow::Result<SyncReport> {
    let from = req.from.trim_end_matches('/');
    let mut report = SyncReport::default();
    let mut channels = Vec::new();
    if req.versions.is_empty() {
        for channel in release::CHANNELS {
            let url = format!("{from}/{channel}");
            match fetcher.text(&url).await {
                Ok(text) => {
                    let version =
                        release::parse_channel(&text).map_err(|e| anyhow!("{url}: {e}"))?;
                    channels.push((channel.to_string(), version));
                }
                Err(e) if crate::fetch::is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if channels.is_empty() {
            anyhow::bail!(
                "{from} publishes neither stable nor latest; name versions with --version"
            );
        }
    }
    let mut versions: Vec<String> = req.versions.clone();
    for (_, v) in &channels {
        if !versions.contains(v) {
            versions.push(v.clone());
        }
    }
    for version in &versions {
        release::validate_version(version).map_err(anyhow::Error::msg)?;
        let url = format!("{from}/{version}/manifest.json");
        let upstream = Manifest::parse(&fetcher.bytes(&url, 1024 * 1024).await?)
            .map_err(|e| anyhow!("{url}: {e}"))?;
        if &upstream.version != version {
            anyhow::bail!(
                "{url} describes version {:?}, not {version}",
                upstream.version
            );
        }
        let mut local = store
            .manifest(version)?
            .unwrap_or_else(|| Manifest::new(version));
        local.commit = upstream.commit.clone();
        local.build_date = upstream.build_date.clone();
        for platform in upstream.platforms.keys() {
            if !req.platforms.is_empty() && !req.platforms.contains(platform) {
                continue;
            }
            let entry = upstream
                .platform(platform)
                .map_err(|e| anyhow!("{url}: {e}"))?;
            let dest = store
                .root()
                .join(version)
                .join(platform)
                .join(&entry.binary);
            let present = release::digest_file(&dest)
                .map(|(sum, size)| sum == entry.checksum && size == entry.size)
                .unwrap_or(false);
            if present {
                report.already_present += 1;
            } else {
                std::fs::create_dir_all(dest.parent().expect("has parent"))
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                let tmp = temp_name(&dest);
                let bin_url = format!("{from}/{version}/{platform}/{}", entry.binary);
                let label = format!("{version} {platform}");
                if let Err(e) = fetcher
                    .download_verified(&bin_url, &tmp, &entry, &label)
                    .await
                {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                let _lock = store.lock()?;
                store.place_verified(version, platform, &tmp, &entry)?;
                report.downloaded += 1;
            }
            if req.checksum_files {
                let sum_path = dest.with_file_name(format!("{}.sha256", entry.binary));
                crate::store::write_atomic(
                    &sum_path,
                    format!("{}  {}\n", entry.checksum, entry.binary).as_bytes(),
                    0o644,
                )?;
            }
            local.platforms.insert(
                platform.clone(),
                serde_json::to_value(&entry).expect("entry serialises"),
            );
        }
        let _lock = store.lock()?;
        store.write_manifest(&local)?;
        report.versions.push(version.clone());
    }
    for (channel, version) in channels {
        store.set_channel(&channel, &version)?;
        report.channels.push((channel, version));
    }
    Ok(report)
}
