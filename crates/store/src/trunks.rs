//! Trunks: SIP gateways for outbound calls and sources of inbound DID calls.

use std::net::IpAddr;
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::cache::CachedTrunk;
use crate::db::{narrow, new_id, now_secs, Store};
use crate::error::StoreError;
use crate::model::Trunk;
use hookflash_config::TrunkSpec;

fn trunk_from_row(row: &AnyRow) -> Result<Trunk, StoreError> {
    let port: i64 = row.try_get("port")?;
    Ok(Trunk {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        host: row.try_get("host")?,
        port: narrow("trunks.port", port)?,
        transport: row.try_get("transport")?,
        username: row.try_get("username")?,
        password: row.try_get("password")?,
    })
}

/// An IP in canonical form: IPv4-mapped IPv6 addresses become IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The trunk's host as an IP, if it is an IP literal (brackets allowed).
fn host_ip(host: &str) -> Option<IpAddr> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    h.parse().ok().map(canonical_ip)
}

impl Store {
    /// Adds a trunk. A name taken in the account gives [`StoreError::Conflict`].
    pub async fn add_trunk(&self, account_id: &str, spec: &TrunkSpec) -> Result<Trunk, StoreError> {
        spec.check().map_err(StoreError::Invalid)?;
        let account = self.require_account(account_id).await?;
        let trunk = Trunk {
            id: new_id(),
            account_id: account.id.clone(),
            name: spec.name.clone(),
            host: spec.host.trim().to_string(),
            port: spec.port,
            transport: spec.transport.clone(),
            username: spec.username.clone(),
            password: spec.password.clone(),
        };
        let mut tx = self.begin_provisioning().await?;
        sqlx::query(
            "INSERT INTO trunks (id, account_id, name, host, port, transport, username, password, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&trunk.id)
        .bind(&trunk.account_id)
        .bind(&trunk.name)
        .bind(&trunk.host)
        .bind(i64::from(trunk.port))
        .bind(&trunk.transport)
        .bind(&trunk.username)
        .bind(&trunk.password)
        .bind(now_secs())
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "trunk {:?} already exists in account {:?}",
                spec.name, account.name
            )),
            other => other,
        })?;
        self.commit_provisioning(tx).await?;
        tracing::info!(account = %account.name, trunk = %trunk.name, host = %trunk.host,
            port = trunk.port, transport = %trunk.transport, "trunk added");
        Ok(trunk)
    }

    /// Replaces host, port, transport and credentials of the named trunk. False if the account
    /// has no trunk of that name.
    pub async fn update_trunk(
        &self,
        account_id: &str,
        spec: &TrunkSpec,
    ) -> Result<bool, StoreError> {
        spec.check().map_err(StoreError::Invalid)?;
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query(
            "UPDATE trunks SET host = $1, port = $2, transport = $3, username = $4, password = $5 \
             WHERE account_id = $6 AND name = $7",
        )
        .bind(spec.host.trim())
        .bind(i64::from(spec.port))
        .bind(&spec.transport)
        .bind(&spec.username)
        .bind(&spec.password)
        .bind(account_id)
        .bind(&spec.name)
        .execute(&mut *tx)
        .await?;
        self.commit_provisioning(tx).await?;
        Ok(res.rows_affected() > 0)
    }

    /// The trunks of an account, oldest first.
    pub async fn trunks(&self, account_id: &str) -> Result<Vec<Trunk>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, host, port, transport, username, password FROM trunks \
             WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trunk_from_row).collect()
    }

    pub async fn trunk_by_name(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<Trunk>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, name, host, port, transport, username, password FROM trunks \
             WHERE account_id = $1 AND name = $2",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(trunk_from_row).transpose()
    }

    /// Removes the named trunk. False if it did not exist.
    pub async fn remove_trunk(&self, account_id: &str, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query("DELETE FROM trunks WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.commit_provisioning(tx).await?;
        Ok(res.rows_affected() > 0)
    }

    /// The trunk outbound calls of the account use: its first (oldest) trunk.
    pub async fn outbound_trunk(&self, account_id: &str) -> Result<Option<Trunk>, StoreError> {
        let all = self.all_trunks().await?;
        Ok(all
            .iter()
            .find(|t| t.trunk.account_id == account_id)
            .map(|t| t.trunk.clone()))
    }

    /// The trunk a request from `ip:port` comes from: a trunk whose host is that IP literal and
    /// whose port is `port` (host names are not resolved). Oldest trunk wins on ties.
    pub async fn trunk_by_source(
        &self,
        ip: IpAddr,
        port: u16,
    ) -> Result<Option<Trunk>, StoreError> {
        let ip = canonical_ip(ip);
        let all = self.all_trunks().await?;
        Ok(all
            .iter()
            .find(|t| t.trunk.port == port && t.ip == Some(ip))
            .map(|t| t.trunk.clone()))
    }

    /// The IP addresses of every trunk whose host is an IP literal (any account).
    pub async fn trunk_ips(&self) -> Result<Vec<IpAddr>, StoreError> {
        let all = self.all_trunks().await?;
        Ok(all.iter().filter_map(|t| t.ip).collect())
    }

    /// All trunks (any account, any port) whose host is the IP literal `ip`, oldest first.
    /// For sources whose port says nothing (e.g. TCP connections from ephemeral ports).
    pub async fn trunks_by_ip(&self, ip: IpAddr) -> Result<Vec<Trunk>, StoreError> {
        let ip = canonical_ip(ip);
        let all = self.all_trunks().await?;
        Ok(all
            .iter()
            .filter(|t| t.ip == Some(ip))
            .map(|t| t.trunk.clone())
            .collect())
    }

    /// All trunks, oldest first, from the read cache (loaded on a miss).
    async fn all_trunks(&self) -> Result<Arc<Vec<CachedTrunk>>, StoreError> {
        self.refresh_cache().await;
        let ticket = match self.cache.lookup(|s| s.trunks.clone()) {
            Ok(all) => return Ok(all),
            Err(ticket) => ticket,
        };
        let rows = sqlx::query(
            "SELECT id, account_id, name, host, port, transport, username, password FROM trunks \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut all = Vec::with_capacity(rows.len());
        for row in &rows {
            let trunk = trunk_from_row(row)?;
            all.push(CachedTrunk {
                ip: host_ip(&trunk.host),
                trunk,
            });
        }
        let all = Arc::new(all);
        self.cache.fill(ticket, |s| s.trunks = Some(all.clone()));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, host: &str, port: u16) -> TrunkSpec {
        TrunkSpec {
            name: name.into(),
            host: host.into(),
            port,
            transport: "udp".into(),
            username: Some("acct".into()),
            password: Some("pw".into()),
        }
    }

    crate::testdb::both_backends! {
        async fn add_list_update_remove() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let t = s
                .add_trunk(&a.id, &spec("carrier", "127.0.0.1", 5080))
                .await
                .unwrap();
            assert_eq!(t.port, 5080);
            assert_eq!(t.password.as_deref(), Some("pw"));
            assert!(!format!("{t:?}").contains("\"pw\""));
            s.add_trunk(&a.id, &spec("backup", "10.0.0.1", 5060))
                .await
                .unwrap();
            assert!(matches!(
                s.add_trunk(&a.id, &spec("carrier", "127.0.0.2", 5060))
                    .await,
                Err(StoreError::Conflict(_))
            ));
            let mut bad = spec("x", "h", 5060);
            bad.transport = "tls".into();
            assert!(matches!(
                s.add_trunk(&a.id, &bad).await,
                Err(StoreError::Invalid(_))
            ));
            assert!(matches!(
                s.add_trunk("nope", &spec("y", "h", 1)).await,
                Err(StoreError::NotFound(_))
            ));

            let names: Vec<String> = s
                .trunks(&a.id)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect();
            assert_eq!(names, vec!["carrier", "backup"]);
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap().unwrap().id, t.id);

            let mut changed = spec("carrier", "127.0.0.1", 5090);
            changed.transport = "tcp".into();
            changed.username = None;
            changed.password = None;
            assert!(s.update_trunk(&a.id, &changed).await.unwrap());
            let t2 = s.trunk_by_name(&a.id, "carrier").await.unwrap().unwrap();
            assert_eq!(
                (t2.port, t2.transport.as_str(), t2.password),
                (5090, "tcp", None)
            );

            assert!(s.remove_trunk(&a.id, "carrier").await.unwrap());
            assert!(!s.remove_trunk(&a.id, "carrier").await.unwrap());
            assert_eq!(
                s.outbound_trunk(&a.id).await.unwrap().unwrap().name,
                "backup"
            );
        }
    }

    crate::testdb::both_backends! {
        async fn trunk_by_source_matches_ip_and_port() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            let t = s
                .add_trunk(&a.id, &spec("carrier", "127.0.0.1", 5080))
                .await
                .unwrap();
            let v6 = s
                .add_trunk(&b.id, &spec("v6", "[::1]", 5080))
                .await
                .unwrap();
            s.add_trunk(&b.id, &spec("dns", "sip.example.com", 5080))
                .await
                .unwrap();

            let lo: IpAddr = "127.0.0.1".parse().unwrap();
            assert_eq!(s.trunk_by_source(lo, 5080).await.unwrap().unwrap().id, t.id);
            assert_eq!(s.trunk_by_source(lo, 5081).await.unwrap(), None);
            assert_eq!(
                s.trunk_by_source("127.0.0.2".parse().unwrap(), 5080)
                    .await
                    .unwrap(),
                None
            );
            // IPv4-mapped IPv6 sources match IPv4 hosts.
            let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
            assert_eq!(
                s.trunk_by_source(mapped, 5080).await.unwrap().unwrap().id,
                t.id
            );
            assert_eq!(
                s.trunk_by_source("::1".parse().unwrap(), 5080)
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                v6.id
            );
            let by_ip = s.trunks_by_ip(lo).await.unwrap();
            assert_eq!(by_ip.len(), 1);
            assert_eq!(by_ip[0].id, t.id);
        }
    }
}
