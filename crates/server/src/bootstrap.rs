//! First start: when the metadata holds no organization yet, create it,
//! the `default` project, the `admin` user (org admin, random password) and
//! an admin API token with every scope, each with its audit event
//! (principal `system`), all or nothing.

use audit::{EventDraft, Resource};
use meta::{Bootstrap, WriteError};

/// Why the first start could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("cannot record the first start in the audit log: {0}")]
    Audit(#[from] audit::AuditError),
}

/// An event of the program itself (principal `system`), with success.
pub fn system_draft(
    organization: &str,
    project: Option<&str>,
    action: &str,
    resource: Resource,
) -> EventDraft {
    EventDraft {
        resource: Some(resource),
        ..EventDraft::system(organization, project, action)
    }
}

fn event(
    b: &Bootstrap,
    project: Option<&str>,
    action: &str,
    kind: &str,
    id: &str,
    name: &str,
) -> EventDraft {
    let resource = Resource {
        kind: kind.into(),
        id: Some(id.into()),
        name: Some(name.into()),
    };
    system_draft(&b.organization.name, project, action, resource)
}

/// Bootstraps an empty installation. Returns `(password, token)` to show
/// once, or `None` when the installation already exists.
pub fn first_start(
    meta: &meta::Meta,
    audit: &audit::AuditLog,
    organization: &str,
    now: i64,
) -> Result<Option<(String, String)>, BootstrapError> {
    if meta.read(|tx| tx.organization())?.is_some() {
        return Ok(None);
    }
    let b = meta
        .write(
            |tx| tx.bootstrap(organization, now),
            |r| {
                let Ok(b) = r else { return Ok(()) };
                let p = Some(b.project.name.as_str());
                for d in [
                    event(
                        b,
                        None,
                        "iam.organization.create",
                        "organization",
                        &b.organization.id,
                        &b.organization.name,
                    ),
                    event(
                        b,
                        None,
                        "iam.project.create",
                        "project",
                        &b.project.id,
                        &b.project.name,
                    ),
                    event(b, None, "iam.user.create", "user", &b.user.id, &b.user.name),
                    event(
                        b,
                        p,
                        "iam.membership.set",
                        "membership",
                        &b.user.id,
                        &b.user.name,
                    ),
                    event(
                        b,
                        p,
                        "iam.token.create",
                        "token",
                        &b.token.id,
                        &b.token.name,
                    ),
                ] {
                    audit.append(d)?;
                }
                Ok::<(), audit::AuditError>(())
            },
        )
        .map_err(|e| match e {
            WriteError::Meta(e) => BootstrapError::Meta(e),
            WriteError::Gate(a) => BootstrapError::Audit(a),
        })?;
    Ok(Some((b.password, b.token_secret)))
}
