//! First-start demo account and declarative provisioning from the config.

use crate::applications::{ApplicationSpec, Hook};
use crate::crypto::generate_password;
use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::model::{Account, DemoCredentials, DialClasses};
use crate::normalize::number_digits;
use hookflash_config::{AccountSpec, AppSpec, HookSpec};

/// Name, realm and extensions of the demo account.
pub const DEMO_ACCOUNT_NAME: &str = "demo";
pub const DEMO_REALM: &str = "hookflash";
pub const DEMO_EXTENSIONS: [&str; 3] = ["101", "102", "103"];

impl Store {
    /// Creates the demo account (realm `hookflash`, users 101-103 with random 12-character
    /// passwords, one API key) when no account exists at all, and returns the plaintext
    /// credentials once. Returns `None` when any account exists.
    ///
    /// Call it after [`Store::apply_provisioning`], so a configured account suppresses it.
    pub async fn ensure_demo_account(&self) -> Result<Option<DemoCredentials>, StoreError> {
        if self.default_account().await?.is_some() {
            return Ok(None);
        }
        let account = self.create_account(DEMO_ACCOUNT_NAME, DEMO_REALM).await?;
        let mut users = Vec::with_capacity(DEMO_EXTENSIONS.len());
        for ext in DEMO_EXTENSIONS {
            let password = generate_password();
            let display = format!("Demo {ext}");
            self.add_user(&account.id, ext, &password, Some(&display))
                .await?;
            users.push((ext.to_string(), password));
        }
        let (_, api_key) = self.create_api_key(&account.id, "demo").await?;
        let (app, oauth_client_secret) = self.create_oauth_app(&account.id, "demo").await?;
        tracing::info!(account = %account.name, "demo account created");
        Ok(Some(DemoCredentials {
            account,
            users,
            api_key,
            oauth_client_id: app.client_id,
            oauth_client_secret,
        }))
    }

    /// Applies `[[accounts]]` from the config. Idempotent and additive: accounts are matched
    /// by name, users by extension (password and display name are set to the config's), numbers
    /// by number (re-pointed to the configured user), trunks by name (updated), applications by
    /// name (hooks set to the config's) with their numbers routed to them (re-pointed from a
    /// user or another application of the account), API keys are inserted when missing.
    /// Nothing absent from the config is deleted.
    pub async fn apply_provisioning(&self, accounts: &[AccountSpec]) -> Result<(), StoreError> {
        for spec in accounts {
            self.apply_account(spec).await?;
        }
        Ok(())
    }

    async fn apply_account(&self, spec: &AccountSpec) -> Result<(), StoreError> {
        let realm = spec.effective_realm();
        let account = match self.account_by_name(&spec.name).await? {
            Some(a) if a.realm != realm => {
                tracing::warn!(account = %a.name, old_realm = %a.realm, new_realm = realm,
                    "account realm changed by config; users not in the config must get new passwords");
                self.set_account_realm(&a.id, realm).await?;
                self.require_account(&a.id).await?
            }
            Some(a) => a,
            None => self.create_account(&spec.name, realm).await?,
        };
        self.apply_dial_policy(&account, spec).await?;

        for u in &spec.users {
            if self
                .set_user_password(&account.id, &u.extension, &u.password)
                .await?
            {
                self.set_user_display_name(&account.id, &u.extension, u.display_name.as_deref())
                    .await?;
            } else {
                self.add_user(
                    &account.id,
                    &u.extension,
                    &u.password,
                    u.display_name.as_deref(),
                )
                .await?;
            }
            if let Some(url) = &u.webhook_url {
                self.set_user_webhook(&account.id, &u.extension, Some(url))
                    .await?;
            }
            if let Some(enabled) = u.voicemail {
                let user = self.require_user(&account.id, &u.extension).await?;
                self.set_mailbox(&user.id, enabled).await?;
            }
            if let Some(dial) = &u.dial {
                let classes = DialClasses::of(dial.iter().copied());
                let user = self.require_user(&account.id, &u.extension).await?;
                if user.dial_classes != Some(classes) {
                    self.set_user_dial_classes(&user.id, Some(classes)).await?;
                }
            }
        }

        for n in &spec.numbers {
            let digits = number_digits(&n.number).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "account {:?}: {:?} is not a phone number",
                    spec.name, n.number
                ))
            })?;
            // A number the config moves from an application of the account to a user.
            self.take_application_number(&account.id, &spec.name, &digits)
                .await?;
            match self.number_by_digits(&digits).await? {
                Some(existing) if existing.account_id != account.id => {
                    return Err(StoreError::Conflict(format!(
                        "account {:?}: number {} belongs to another account",
                        spec.name, existing.number
                    )));
                }
                Some(_) => {
                    self.set_number_user(&account.id, &digits, &n.user).await?;
                }
                None => {
                    self.add_number(&account.id, &digits, &n.user).await?;
                }
            }
        }

        for t in &spec.trunks {
            if !self.update_trunk(&account.id, t).await? {
                self.add_trunk(&account.id, t).await?;
            }
        }

        for app in &spec.applications {
            self.apply_application(&account, &spec.name, app).await?;
        }

        for key in &spec.api_keys {
            self.insert_api_key(&account.id, "config", key).await?;
        }

        for o in &spec.oauth_apps {
            let name = o.name.as_deref().unwrap_or(&o.client_id);
            self.upsert_oauth_app(&account.id, name, &o.client_id, &o.client_secret)
                .await?;
        }

        tracing::info!(
            account = %account.name,
            users = spec.users.len(),
            numbers = spec.numbers.len(),
            trunks = spec.trunks.len(),
            applications = spec.applications.len(),
            api_keys = spec.api_keys.len(),
            oauth_apps = spec.oauth_apps.len(),
            "account provisioned from config"
        );
        Ok(())
    }

    /// Creates or updates (by name) one configured application and routes its numbers to it.
    async fn apply_application(
        &self,
        account: &Account,
        account_name: &str,
        app: &AppSpec,
    ) -> Result<(), StoreError> {
        let wanted = ApplicationSpec {
            name: app.name.trim().to_string(),
            call_hook: hook_of(&app.call_hook),
            call_status_hook: app.call_status_hook.as_ref().map(hook_of),
            fallback: app.fallback.as_ref().map(hook_of),
        };
        let (id, language) = match self.application_by_name(&account.id, &wanted.name).await? {
            Some(existing) => {
                let same = existing.call_hook == wanted.call_hook
                    && existing.call_status_hook == wanted.call_status_hook
                    && existing.fallback == wanted.fallback;
                if !same {
                    self.update_application(&account.id, &existing.id, &wanted)
                        .await?;
                }
                (existing.id, existing.language)
            }
            None => {
                let created = self.create_application(&account.id, &wanted).await?;
                (created.id, created.language)
            }
        };
        // The file's language (absent: jambonz), like its hooks.
        if language != app.language {
            self.set_application_language(&account.id, &id, app.language)
                .await?;
        }
        for number in &app.numbers {
            let digits = number_digits(number).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "account {account_name:?}: application {:?}: {number:?} is not a phone number",
                    wanted.name
                ))
            })?;
            self.route_to_application(&account.id, account_name, &digits, &id)
                .await?;
        }
        Ok(())
    }

    /// Routes a number (digits) to an application of the account in one transaction: a number
    /// of a user or another application of the same account is re-pointed, one of another
    /// account is a conflict, one already routed there is left alone.
    async fn route_to_application(
        &self,
        account_id: &str,
        account_name: &str,
        digits: &str,
        application_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_provisioning().await?;
        let user_owner: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM numbers WHERE digits = $1")
                .bind(digits)
                .fetch_optional(&mut *tx)
                .await?;
        let app_owner: Option<(String, String)> = sqlx::query_as(
            "SELECT account_id, application_id FROM application_numbers WHERE digits = $1",
        )
        .bind(digits)
        .fetch_optional(&mut *tx)
        .await?;
        let foreign = user_owner.as_deref().is_some_and(|a| a != account_id)
            || app_owner.as_ref().is_some_and(|(a, _)| a != account_id);
        if foreign {
            return Err(StoreError::Conflict(format!(
                "account {account_name:?}: number +{digits} belongs to another account"
            )));
        }
        match app_owner {
            Some((_, app)) if app == application_id => return Ok(()),
            Some(_) => {
                sqlx::query("UPDATE application_numbers SET application_id = $1 WHERE digits = $2")
                    .bind(application_id)
                    .bind(digits)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                if user_owner.is_some() {
                    sqlx::query("DELETE FROM numbers WHERE digits = $1")
                        .bind(digits)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO application_numbers (id, account_id, number, digits, \
                     application_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(new_id())
                .bind(account_id)
                .bind(format!("+{digits}"))
                .bind(digits)
                .bind(application_id)
                .bind(now_secs())
                .execute(&mut *tx)
                .await?;
            }
        }
        self.commit_provisioning(tx).await?;
        tracing::info!(account = account_name, number = %format!("+{digits}"), application_id,
            "number routed to an application by config");
        Ok(())
    }

    /// Frees a number (digits) routed to an application of the account, so the config can give
    /// it to a user. One routed to an application of another account is a conflict.
    async fn take_application_number(
        &self,
        account_id: &str,
        account_name: &str,
        digits: &str,
    ) -> Result<(), StoreError> {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM application_numbers WHERE digits = $1")
                .bind(digits)
                .fetch_optional(&self.pool)
                .await?;
        match owner {
            None => Ok(()),
            Some(a) if a != account_id => Err(StoreError::Conflict(format!(
                "account {account_name:?}: number +{digits} belongs to another account"
            ))),
            Some(_) => {
                let mut tx = self.begin_provisioning().await?;
                sqlx::query(
                    "DELETE FROM application_numbers WHERE account_id = $1 AND digits = $2",
                )
                .bind(account_id)
                .bind(digits)
                .execute(&mut *tx)
                .await?;
                self.commit_provisioning(tx).await
            }
        }
    }

    /// Applies the dial policy keys of an account spec that are present; absent ones keep
    /// what is stored (for a new account: [`crate::DialPolicy::default`]).
    async fn apply_dial_policy(
        &self,
        account: &Account,
        spec: &AccountSpec,
    ) -> Result<(), StoreError> {
        let mut policy = account.dial.clone();
        if let Some(cc) = &spec.country_code {
            policy.country_code = Some(cc.clone());
        }
        if let Some(dial) = &spec.dial {
            policy.classes = DialClasses::of(dial.iter().copied());
        }
        if let Some(v) = spec.outside_sessions {
            policy.outside_sessions = v;
        }
        if let Some(v) = spec.max_outbound_calls {
            policy.max_outbound_calls = v;
        }
        if let Some(v) = spec.outbound_calls_per_minute {
            policy.outbound_calls_per_minute = v;
        }
        if policy != account.dial {
            self.set_account_dial_policy(&account.id, &policy).await?;
        }
        Ok(())
    }
}

/// The store's form of a configured hook.
fn hook_of(h: &HookSpec) -> Hook {
    Hook {
        url: h.url.clone(),
        method: h.method,
        username: h.username.clone(),
        password: h.password.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ha1, DigestAlgorithm};
    use crate::model::{DialClass, DialPolicy};
    use hookflash_config::{AppLanguage, Config, HookMethod};

    const CONFIG: &str = r#"
[[accounts]]
name = "acme"
realm = "acme.local"
api_keys = ["hf_test_key_acme"]

  [[accounts.users]]
  extension = "201"
  password = "secret201"
  display_name = "Alice"
  webhook_url = "http://127.0.0.1:9000/sipgate"
  voicemail = true

  [[accounts.users]]
  extension = "202"
  password = "secret202"

  [[accounts.numbers]]
  number = "+4930123456"
  user = "201"

  [[accounts.trunks]]
  name = "carrier"
  host = "127.0.0.1"
  port = 5080
  transport = "udp"
  username = "acct"
  password = "pw"
"#;

    crate::testdb::both_backends! {
        async fn demo_account_only_on_an_empty_store() {
            let s = crate::testdb::store().await;
            let demo = s.ensure_demo_account().await.unwrap().unwrap();
            assert_eq!(demo.account.name, "demo");
            assert_eq!(demo.account.realm, "hookflash");
            assert_eq!(demo.users.len(), 3);
            assert!(!format!("{demo:?}").contains(&demo.oauth_client_secret));
            assert!(s
                .verify_oauth_client(&demo.oauth_client_id, &demo.oauth_client_secret)
                .await
                .unwrap()
                .is_some());
            for (ext, pw) in &demo.users {
                assert_eq!(pw.len(), 12);
                let u = s
                    .user_by_extension(&demo.account.id, ext)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(u.ha1_md5, ha1(DigestAlgorithm::Md5, ext, "hookflash", pw));
            }
            assert!(!format!("{demo:?}").contains(&demo.api_key));
            assert_eq!(
                s.verify_api_key(&demo.api_key)
                    .await
                    .unwrap()
                    .unwrap()
                    .account_id,
                demo.account.id
            );
            assert!(s.ensure_demo_account().await.unwrap().is_none());
            assert_eq!(s.accounts().await.unwrap().len(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn provisioned_accounts_suppress_the_demo() {
            let s = crate::testdb::store().await;
            let config = Config::from_toml_str(CONFIG).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            assert!(s.ensure_demo_account().await.unwrap().is_none());
            assert!(s.account_by_name("demo").await.unwrap().is_none());
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_creates_everything() {
            let s = crate::testdb::store().await;
            let config = Config::from_toml_str(CONFIG).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();

            let a = s.account_by_name("acme").await.unwrap().unwrap();
            assert_eq!(a.realm, "acme.local");
            let users = s.users(&a.id).await.unwrap();
            assert_eq!(users.len(), 2);
            assert_eq!(users[0].display_name.as_deref(), Some("Alice"));
            assert_eq!(
                s.user_webhook(&users[0].id).await.unwrap().as_deref(),
                Some("http://127.0.0.1:9000/sipgate")
            );
            assert_eq!(s.user_webhook(&users[1].id).await.unwrap(), None);
            assert!(s.mailbox(&users[0].id).await.unwrap().unwrap().enabled);
            assert_eq!(
                s.mailbox(&users[1].id).await.unwrap(),
                None,
                "absent: no mailbox"
            );
            assert_eq!(
                users[0].ha1_sha256,
                ha1(DigestAlgorithm::Sha256, "201", "acme.local", "secret201")
            );
            let (_, user) = s.lookup_number("4930123456").await.unwrap().unwrap();
            assert_eq!(user.extension, "201");
            let t = s.outbound_trunk(&a.id).await.unwrap().unwrap();
            assert_eq!(
                (t.host.as_str(), t.port, t.username.as_deref()),
                ("127.0.0.1", 5080, Some("acct"))
            );
            assert_eq!(
                s.verify_api_key("hf_test_key_acme")
                    .await
                    .unwrap()
                    .unwrap()
                    .account_id,
                a.id
            );
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_is_idempotent_and_updates() {
            let s = crate::testdb::store().await;
            let config = Config::from_toml_str(CONFIG).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let a = s.account_by_name("acme").await.unwrap().unwrap();
            assert_eq!(s.accounts().await.unwrap().len(), 1);
            assert_eq!(s.users(&a.id).await.unwrap().len(), 2);
            assert_eq!(s.numbers(&a.id).await.unwrap().len(), 1);
            assert_eq!(s.trunks(&a.id).await.unwrap().len(), 1);
            assert_eq!(s.api_keys(&a.id).await.unwrap().len(), 1);

            // Something added by the CLI survives a re-apply.
            s.add_user(&a.id, "299", "cli", None).await.unwrap();

            let changed = CONFIG
                .replace("secret201", "newsecret")
                .replace("port = 5080", "port = 5090")
                .replace("user = \"201\"", "user = \"202\"");
            let config = Config::from_toml_str(&changed).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let u = s.user_by_extension(&a.id, "201").await.unwrap().unwrap();
            assert_eq!(
                u.ha1_md5,
                ha1(DigestAlgorithm::Md5, "201", "acme.local", "newsecret")
            );
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap().unwrap().port, 5090);
            let (_, user) = s.lookup_number("+4930123456").await.unwrap().unwrap();
            assert_eq!(user.extension, "202");
            assert!(s.user_by_extension(&a.id, "299").await.unwrap().is_some());
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_switches_voicemail_only_when_given() {
            let s = crate::testdb::store().await;
            let config = Config::from_toml_str(CONFIG).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let a = s.account_by_name("acme").await.unwrap().unwrap();
            let u201 = s.user_by_extension(&a.id, "201").await.unwrap().unwrap();
            let u202 = s.user_by_extension(&a.id, "202").await.unwrap().unwrap();
            // A greeting set through the API survives a re-apply; so does 202's mailbox (absent
            // from the config: left as it is).
            s.set_greeting(&u201.id, Some("/g.wav")).await.unwrap();
            s.set_mailbox(&u202.id, true).await.unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let m = s.mailbox(&u201.id).await.unwrap().unwrap();
            assert!(m.enabled);
            assert_eq!(m.greeting_path.as_deref(), Some("/g.wav"));
            assert!(s.mailbox(&u202.id).await.unwrap().unwrap().enabled);

            // `voicemail = false` switches it off.
            let off = CONFIG.replace("voicemail = true", "voicemail = false");
            let config = Config::from_toml_str(&off).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let m = s.mailbox(&u201.id).await.unwrap().unwrap();
            assert!(!m.enabled);
            assert_eq!(m.greeting_path.as_deref(), Some("/g.wav"));
        }
    }

    /// CONFIG with every dial permission key set.
    fn config_with_dial_keys() -> String {
        CONFIG
            .replace(
                "api_keys = [\"hf_test_key_acme\"]\n",
                "api_keys = [\"hf_test_key_acme\"]\ncountry_code = \"49\"\n\
                 dial = [\"internal\", \"national\", \"international\"]\n\
                 outside_sessions = true\nmax_outbound_calls = 5\noutbound_calls_per_minute = 0\n",
            )
            .replace(
                "voicemail = true\n",
                "voicemail = true\n  dial = [\"internal\"]\n",
            )
    }

    crate::testdb::both_backends! {
        async fn provisioning_applies_dial_permissions_when_given() {
            let s = crate::testdb::store().await;
            let config = Config::from_toml_str(&config_with_dial_keys()).unwrap();
            config.validate().unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let a = s.account_by_name("acme").await.unwrap().unwrap();
            let configured = DialPolicy {
                country_code: Some("49".into()),
                classes: DialClasses::of([
                    DialClass::Internal,
                    DialClass::National,
                    DialClass::International,
                ]),
                outside_sessions: true,
                max_outbound_calls: 5,
                outbound_calls_per_minute: 0,
            };
            assert_eq!(a.dial, configured);
            let internal = DialClasses::of([DialClass::Internal]);
            let u201 = s.user_by_extension(&a.id, "201").await.unwrap().unwrap();
            let u202 = s.user_by_extension(&a.id, "202").await.unwrap().unwrap();
            assert_eq!(u201.dial_classes, Some(internal));
            assert_eq!(u202.dial_classes, None, "absent: the account's");

            // Present keys are applied at every start: a CLI change to them is reverted ...
            s.set_account_dial_policy(&a.id, &DialPolicy::default())
                .await
                .unwrap();
            s.set_user_dial_classes(&u201.id, None).await.unwrap();
            // ... while 202 (no `dial` key) keeps what the CLI set.
            s.set_user_dial_classes(&u202.id, Some(DialClasses::NONE))
                .await
                .unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            assert_eq!(
                s.account_by_id(&a.id).await.unwrap().unwrap().dial,
                configured
            );
            assert_eq!(
                s.user_by_id(&u201.id).await.unwrap().unwrap().dial_classes,
                Some(internal)
            );
            assert_eq!(
                s.user_by_id(&u202.id).await.unwrap().unwrap().dial_classes,
                Some(DialClasses::NONE)
            );
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_leaves_dial_permissions_alone_when_absent() {
            let s = crate::testdb::store().await;
            let config = Config::from_toml_str(CONFIG).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let a = s.account_by_name("acme").await.unwrap().unwrap();
            assert_eq!(a.dial, DialPolicy::default(), "a new account: the default");
            let u201 = s.user_by_extension(&a.id, "201").await.unwrap().unwrap();
            assert_eq!(u201.dial_classes, None);

            // Changes made by the CLI or the API survive a re-apply without the keys.
            let changed = DialPolicy {
                country_code: Some("44".into()),
                classes: DialClasses::of(DialClass::ALL),
                outside_sessions: true,
                max_outbound_calls: 3,
                outbound_calls_per_minute: 7,
            };
            s.set_account_dial_policy(&a.id, &changed).await.unwrap();
            s.set_user_dial_classes(&u201.id, Some(DialClasses::NEW_ACCOUNT))
                .await
                .unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            assert_eq!(s.account_by_id(&a.id).await.unwrap().unwrap().dial, changed);
            assert_eq!(
                s.user_by_id(&u201.id).await.unwrap().unwrap().dial_classes,
                Some(DialClasses::NEW_ACCOUNT)
            );

            // One key present: only that one is applied.
            let only_limit = CONFIG.replace(
                "api_keys = [\"hf_test_key_acme\"]\n",
                "api_keys = [\"hf_test_key_acme\"]\nmax_outbound_calls = 2\n",
            );
            let config = Config::from_toml_str(&only_limit).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            assert_eq!(
                s.account_by_id(&a.id).await.unwrap().unwrap().dial,
                DialPolicy {
                    max_outbound_calls: 2,
                    ..changed
                }
            );
        }
    }

    const APPS: &str = r#"
  [[accounts.applications]]
  name = "ivr"
  call_hook = "http://127.0.0.1:9100/call"
  call_status_hook = { url = "http://127.0.0.1:9100/status", method = "GET", username = "u", password = "p" }
  numbers = ["+4930999001", "4930999002"]

  [[accounts.applications]]
  name = "queue"
  call_hook = { url = "https://app.example/queue", method = "post" }
  fallback = "https://app.example/fallback"
  language = "rcml"
"#;

    fn config_with_apps(apps: &str) -> Config {
        let c = Config::from_toml_str(&format!("{CONFIG}{apps}")).unwrap();
        c.validate().unwrap();
        c
    }

    crate::testdb::both_backends! {
        async fn provisioning_creates_applications_and_routes_their_numbers() {
            let s = crate::testdb::store().await;
            let config = config_with_apps(APPS);
            s.apply_provisioning(&config.accounts).await.unwrap();
            let a = s.account_by_name("acme").await.unwrap().unwrap();
            let apps = s.applications(&a.id).await.unwrap();
            assert_eq!(apps.len(), 2);
            let ivr = s.application_by_name(&a.id, "ivr").await.unwrap().unwrap();
            assert_eq!(ivr.call_hook, Hook::post("http://127.0.0.1:9100/call"));
            let status = ivr.call_status_hook.clone().unwrap();
            assert_eq!(status.method, HookMethod::Get);
            assert_eq!(
                (status.username.as_deref(), status.password.as_deref()),
                (Some("u"), Some("p"))
            );
            assert_eq!(ivr.fallback, None);
            assert_eq!(ivr.language, AppLanguage::Jambonz);
            let queue = s
                .application_by_name(&a.id, "queue")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(queue.call_hook.method, HookMethod::Post);
            assert_eq!(queue.language, AppLanguage::Rcml);
            assert_eq!(
                queue.fallback.map(|h| h.url),
                Some("https://app.example/fallback".to_string())
            );
            for n in ["+4930999001", "4930999002"] {
                let found = s.application_for_number(n).await.unwrap();
                assert_eq!(found.map(|x| x.id), Some(ivr.id.clone()), "{n}");
            }
            let numbers = s.application_numbers(&a.id).await.unwrap();
            assert_eq!(
                numbers
                    .iter()
                    .map(|n| n.number.as_str())
                    .collect::<Vec<_>>(),
                ["+4930999001", "+4930999002"]
            );

            // Idempotent: the same ids, no duplicates.
            s.apply_provisioning(&config.accounts).await.unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let again = s.applications(&a.id).await.unwrap();
            assert_eq!(again, apps);
            assert_eq!(s.application_numbers(&a.id).await.unwrap(), numbers);
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_updates_applications_and_repoints_numbers() {
            let s = crate::testdb::store().await;
            s.apply_provisioning(&config_with_apps(APPS).accounts)
                .await
                .unwrap();
            let a = s.account_by_name("acme").await.unwrap().unwrap();
            let ivr = s.application_by_name(&a.id, "ivr").await.unwrap().unwrap();
            let queue = s
                .application_by_name(&a.id, "queue")
                .await
                .unwrap()
                .unwrap();
            // Made by the CLI or the API: survives.
            let api_app = s
                .create_application(
                    &a.id,
                    &ApplicationSpec {
                        name: "api".into(),
                        call_hook: Hook::post("http://127.0.0.1:9/api"),
                        call_status_hook: None,
                        fallback: None,
                    },
                )
                .await
                .unwrap();
            s.add_application_number(&a.id, "+4930999009", &api_app.id)
                .await
                .unwrap();

            // Hooks changed, the status hook dropped, 999002 moved to "queue", and the user
            // number +4930123456 moved from user 201 to "queue" (the [[accounts.numbers]] entry
            // is gone from the file).
            let changed = APPS
                .replace("9100/call", "9200/call")
                .replace(
                    "  call_status_hook = { url = \"http://127.0.0.1:9100/status\", method = \"GET\", username = \"u\", password = \"p\" }\n",
                    "",
                )
                .replace("\"4930999002\"", "")
                .replace("  language = \"rcml\"\n", "")
                .replace(
                    "fallback = \"https://app.example/fallback\"\n",
                    "fallback = \"https://app.example/fallback\"\n  numbers = [\"+4930999002\", \"+4930123456\"]\n",
                );
            let without_user_number = CONFIG.replace(
                "  [[accounts.numbers]]\n  number = \"+4930123456\"\n  user = \"201\"\n",
                "",
            );
            let config = Config::from_toml_str(&format!("{without_user_number}{changed}")).unwrap();
            config.validate().unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();

            let got = s.application(&a.id, &ivr.id).await.unwrap().unwrap();
            assert_eq!(got.call_hook.url, "http://127.0.0.1:9200/call");
            assert_eq!(got.call_status_hook, None);
            // An absent language is jambonz again.
            let q = s.application(&a.id, &queue.id).await.unwrap().unwrap();
            assert_eq!((queue.language, q.language), (AppLanguage::Rcml, AppLanguage::Jambonz));
            let route = |n: &'static str| {
                let s = s.clone();
                async move { s.application_for_number(n).await.unwrap().map(|x| x.id) }
            };
            assert_eq!(route("+4930999001").await, Some(ivr.id.clone()));
            assert_eq!(route("+4930999002").await, Some(queue.id.clone()));
            assert_eq!(route("+4930123456").await, Some(queue.id.clone()));
            assert_eq!(s.lookup_number("+4930123456").await.unwrap(), None);
            assert_eq!(route("+4930999009").await, Some(api_app.id.clone()));
            assert_eq!(s.applications(&a.id).await.unwrap().len(), 3);

            // And back: the original file gives +4930123456 to user 201 again.
            let config = Config::from_toml_str(CONFIG).unwrap();
            s.apply_provisioning(&config.accounts).await.unwrap();
            let (_, user) = s.lookup_number("+4930123456").await.unwrap().unwrap();
            assert_eq!(user.extension, "201");
            assert_eq!(route("+4930123456").await, None);
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_refuses_an_application_number_of_another_account() {
            let s = crate::testdb::store().await;
            let other = s.create_account("other", "other.local").await.unwrap();
            s.add_user(&other.id, "1", "pw", None).await.unwrap();
            s.add_number(&other.id, "+4930999001", "1").await.unwrap();
            let err = s
                .apply_provisioning(&config_with_apps(APPS).accounts)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, StoreError::Conflict(m) if m.contains("another account")),
                "{err}"
            );

            // An application number of another account is not taken for a user either.
            let s = crate::testdb::store().await;
            let other = s.create_account("other", "other.local").await.unwrap();
            let app = s
                .create_application(
                    &other.id,
                    &ApplicationSpec {
                        name: "x".into(),
                        call_hook: Hook::post("http://127.0.0.1:9/x"),
                        call_status_hook: None,
                        fallback: None,
                    },
                )
                .await
                .unwrap();
            s.add_application_number(&other.id, "+4930123456", &app.id)
                .await
                .unwrap();
            let config = Config::from_toml_str(CONFIG).unwrap();
            assert!(matches!(
                s.apply_provisioning(&config.accounts).await,
                Err(StoreError::Conflict(_))
            ));
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_errors_are_reported() {
            let s = crate::testdb::store().await;
            // A number pointing at a user that exists nowhere.
            let bad = CONFIG.replace("user = \"201\"", "user = \"777\"");
            let config = Config::from_toml_str(&bad).unwrap();
            assert!(matches!(
                s.apply_provisioning(&config.accounts).await,
                Err(StoreError::NotFound(_))
            ));

            // A number owned by another account.
            let s = crate::testdb::store().await;
            let other = s.create_account("other", "other.local").await.unwrap();
            s.add_user(&other.id, "1", "pw", None).await.unwrap();
            s.add_number(&other.id, "+4930123456", "1").await.unwrap();
            let config = Config::from_toml_str(CONFIG).unwrap();
            assert!(matches!(
                s.apply_provisioning(&config.accounts).await,
                Err(StoreError::Conflict(_))
            ));
        }
    }
}
