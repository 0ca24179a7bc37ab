//! Who is asking, and whether their form is theirs.
//!
//! - [`Viewer`]: the signed-in person of a request (else a redirect to the sign-in page) and their language;
//! - [`Signed`]: a form posted by a signed-in person with their session's CSRF token — every state-changing
//!   route takes one, so a form without the token never reaches a handler (`403 CSRF_INVALID`);
//! - [`SignedUpload`]: the same for a file upload (`multipart/form-data`), the token its first field.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::i18n::Lang;
use crate::security::{cookie, same_token, session_cookie_name};
use crate::services::PageError;
use crate::sessions::ConsoleSession;

/// The most a form may carry (an application's text fields).
pub const FORM_LIMIT: usize = 256 * 1024;

/// How long a form's body may take to arrive (a client trickling a body must not hold a connection).
pub const FORM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A form's body, within [`FORM_LIMIT`] and [`FORM_TIMEOUT`].
async fn form_body(body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
    match tokio::time::timeout(FORM_TIMEOUT, axum::body::to_bytes(body, FORM_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(
            PageError::new(StatusCode::PAYLOAD_TOO_LARGE, "FORM_TOO_LARGE", "the form is too large").into_response(),
        ),
        Err(_) => Err(PageError::new(
            StatusCode::REQUEST_TIMEOUT,
            "FORM_TIMEOUT",
            "the form took too long to arrive",
        )
        .into_response()),
    }
}

/// The signed-in person of a request.
#[derive(Clone)]
pub struct Viewer {
    /// Their session.
    pub session: Arc<ConsoleSession>,
    /// The page's language.
    pub lang: Lang,
}

impl Viewer {
    /// Whether they hold `role`.
    pub fn has(&self, role: &str) -> bool {
        self.session.has(role)
    }

    /// Their policy session, for a service request.
    pub fn token(&self) -> &str {
        self.session.token()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let lang = Lang::of(&parts.headers);
        let session = cookie(&parts.headers, session_cookie_name(state.secure))
            .and_then(|c| state.sessions.get(c))
            .ok_or_else(|| Redirect::to("/signin").into_response())?;
        Ok(Viewer { session, lang })
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        Ok(<Viewer as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .ok())
    }
}

/// The language of a request that needs no session (sign-in, the public registers).
pub struct Language(pub Lang);

impl<S: Send + Sync> FromRequestParts<S> for Language {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Language(Lang::of(&parts.headers)))
    }
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// The `done` parameter of a page reached after an act (`?done=voted`): which notice to show.
pub struct Notice(pub String);

#[derive(Deserialize)]
struct DoneParam {
    #[serde(default)]
    done: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Notice {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let done = serde_urlencoded::from_str::<DoneParam>(query)
            .map(|d| d.done)
            .unwrap_or_default();
        Ok(Notice(done))
    }
}

/// A form posted without a session (sign-in), read from its URL-encoded body.
pub struct UrlForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequest<S> for UrlForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = form_body(request.into_body()).await?;
        serde_urlencoded::from_bytes(&bytes).map(UrlForm).map_err(|_| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                "FORM_INVALID",
                "the form's fields could not be read",
            )
            .into_response()
        })
    }
}

/// A form of type `T` posted by [`Viewer`] with their session's CSRF token.
pub struct Signed<T> {
    /// Who posted it.
    pub viewer: Viewer,
    /// What they posted.
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Signed<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let bytes = form_body(body).await?;
        let token: CsrfField = serde_urlencoded::from_bytes(&bytes).unwrap_or(CsrfField { csrf: String::new() });
        if !same_token(&token.csrf, &viewer.session.csrf) {
            tracing::warn!(user = %viewer.session.username, "a form without its CSRF token was refused");
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "CSRF_INVALID",
                "the form did not carry this session's token; reload the page and try again",
            )
            .into_response());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                "FORM_INVALID",
                "the form's fields could not be read",
            )
            .into_response()
        })?;
        Ok(Signed { viewer, form })
    }
}

/// The most an uploaded file may carry (a leaked copy to trace: a release's table, CSV or Parquet) — the release
/// zone's own limit on a leaked file, so nothing it would refuse is received whole first.
pub const UPLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// The fields an upload form may carry (the leak trace's), the token first.
const UPLOAD_FIELDS: [&str; 4] = ["csrf", "release", "table", "file"];

/// Who may upload: the one upload is the leak trace, an operator's (the release zone still decides; this only
/// spares the console receiving a file from someone the zone would refuse).
const UPLOADERS: [&str; 1] = ["operator"];

/// How long an upload may take to arrive.
pub const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The most a text field of an upload form may carry.
const UPLOAD_FIELD_LIMIT: usize = 4 * 1024;

/// A file posted by [`Viewer`] in a `multipart/form-data` form whose **first** field is the session's CSRF token:
/// the token is checked before any more of the body is asked for (what already arrived is buffered, never more than
/// [`UPLOAD_LIMIT`]), and only then is one of the console's upload slots taken. Text fields come as they were
/// typed; the one file field (named `file`) as its name and bytes.
pub struct SignedUpload {
    /// Who posted it.
    pub viewer: Viewer,
    /// The form's text fields, by name.
    pub fields: std::collections::BTreeMap<String, String>,
    /// The file's name as the browser gave it.
    pub file_name: String,
    /// The file's bytes.
    pub content: Vec<u8>,
    /// The upload slot: the handler keeps it until it is done with the bytes, so that at most
    /// [`crate::CONCURRENT_UPLOADS`] files are held in memory at once.
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

fn upload_refused(status: StatusCode, reason: &str, message: &str) -> Response {
    PageError::new(status, reason, message).into_response()
}

impl FromRequest<AppState> for SignedUpload {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        if !UPLOADERS.iter().any(|r| viewer.has(r)) {
            return Err(upload_refused(
                StatusCode::FORBIDDEN,
                "ROLE_NOT_PERMITTED",
                "only operators upload files here",
            ));
        }
        let boundary = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| multer::parse_boundary(v).ok())
            .ok_or_else(|| upload_refused(StatusCode::BAD_REQUEST, "FORM_INVALID", "the form is not a file upload"))?;
        let limits = multer::Constraints::new()
            .allowed_fields(UPLOAD_FIELDS.to_vec())
            .size_limit(
                multer::SizeLimit::new()
                    .whole_stream(UPLOAD_LIMIT as u64 + 64 * 1024)
                    .per_field(UPLOAD_FIELD_LIMIT as u64)
                    .for_field("file", UPLOAD_LIMIT as u64),
            );
        let mut multipart = multer::Multipart::with_constraints(body.into_data_stream(), boundary, limits);
        // The token within a form's time, before a slot is taken: a client trickling it holds no slot.
        match tokio::time::timeout(FORM_TIMEOUT, check_token(&mut multipart, &viewer)).await {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => return Err(refusal),
            Err(_) => return Err(too_slow()),
        }
        let Ok(permit) = state.uploads.clone().try_acquire_owned() else {
            return Err(upload_refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "UPLOADS_BUSY",
                "other uploads are being handled; try again in a moment",
            ));
        };
        match tokio::time::timeout(UPLOAD_TIMEOUT, read_upload(multipart)).await {
            Ok(Ok((fields, file_name, content))) => Ok(SignedUpload {
                viewer,
                fields,
                file_name,
                content,
                permit,
            }),
            Ok(Err(refusal)) => Err(refusal),
            Err(_) => Err(too_slow()),
        }
    }
}

fn too_slow() -> Response {
    upload_refused(
        StatusCode::REQUEST_TIMEOUT,
        "FORM_TIMEOUT",
        "the upload took too long to arrive",
    )
}

type UploadParts = (std::collections::BTreeMap<String, String>, String, Vec<u8>);

fn multipart_refused(e: multer::Error) -> Response {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => upload_refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FORM_TOO_LARGE",
            "the upload is too large",
        ),
        multer::Error::UnknownField { .. } => upload_refused(
            StatusCode::BAD_REQUEST,
            "FORM_INVALID",
            "the upload carries a field it may not",
        ),
        _ => upload_refused(StatusCode::BAD_REQUEST, "FORM_INVALID", "the upload could not be read"),
    }
}

/// The first field must be the session's token (else nothing more is asked for).
async fn check_token(multipart: &mut multer::Multipart<'static>, viewer: &Viewer) -> Result<(), Response> {
    let refused = multipart_refused;
    let first = multipart.next_field().await.map_err(refused)?;
    let token = match first {
        Some(f) if f.name() == Some("csrf") => f.text().await.map_err(refused)?,
        _ => String::new(),
    };
    if !same_token(&token, &viewer.session.csrf) {
        tracing::warn!(user = %viewer.session.username, "an upload without its CSRF token was refused");
        return Err(upload_refused(
            StatusCode::FORBIDDEN,
            "CSRF_INVALID",
            "the form did not carry this session's token; reload the page and try again",
        ));
    }
    Ok(())
}

/// The text fields and the one file (a part named `file` with a file name; no other part may carry one).
async fn read_upload(mut multipart: multer::Multipart<'static>) -> Result<UploadParts, Response> {
    let refused = multipart_refused;
    let mut fields = std::collections::BTreeMap::new();
    let mut file = None;
    while let Some(mut field) = multipart.next_field().await.map_err(refused)? {
        let name = field.name().unwrap_or_default().to_owned();
        if (name == "file") != field.file_name().is_some() {
            return Err(upload_refused(
                StatusCode::BAD_REQUEST,
                "FORM_INVALID",
                "only the file field carries a file",
            ));
        }
        if let Some(file_name) = field.file_name().map(str::to_owned) {
            if file.is_some() {
                return Err(upload_refused(
                    StatusCode::BAD_REQUEST,
                    "FORM_INVALID",
                    "one file per upload",
                ));
            }
            let mut content = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(refused)? {
                content.extend_from_slice(&chunk);
            }
            file = Some((file_name, content));
        } else {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(refused)? {
                value.extend_from_slice(&chunk);
            }
            let value = String::from_utf8(value)
                .map_err(|_| upload_refused(StatusCode::BAD_REQUEST, "FORM_INVALID", "a field is not UTF-8"))?;
            fields.insert(name, value);
        }
    }
    let (file_name, content) = file.unwrap_or_default();
    Ok((fields, file_name, content))
}
