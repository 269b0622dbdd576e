//! Pulls through the registry v2 token flow, against Debian's docker-registry set up for
//! token authentication and the test token service of `common::token`: berth must take
//! the registry's `Bearer` challenge to the realm, with the CRI credentials when it has
//! them, and present the token it gets; a CRI `registry_token` goes to the registry as
//! it is. Each test has its own issuer, registry and daemon.

mod common;

use berth::proto::image_service_client::ImageServiceClient;
use berth::proto::{
    AuthConfig, ImageSpec, ImageStatusRequest, PullImageRequest, RemoveImageRequest,
};
use common::images::{Compression, ImageConfig, LayerBuilder, TestImage};
use common::registry::{Registry, RegistryOptions};
use common::token::{IssuerOptions, SERVICE, TokenIssuer, TokenRequest};
use common::{Daemon, Setup};
use tonic::transport::Channel;

/// The repository every test pushes to and pulls from.
const REPO: &str = "private/app";

/// An issuer, a registry that trusts it with a busybox image in [`REPO`], and a daemon
/// that reaches the registry over plain HTTP. Dropped in this order: the daemon first,
/// then the registry, then the issuer.
struct Fixture {
    daemon: Daemon,
    registry: Registry,
    issuer: TokenIssuer,
    image: TestImage,
}

impl Fixture {
    async fn start(anonymous_pull: bool) -> Fixture {
        let issuer = TokenIssuer::start(IssuerOptions {
            anonymous_pull,
            ..IssuerOptions::default()
        })
        .await;
        let registry = Registry::start_with(RegistryOptions {
            token_auth: Some(issuer.registry_auth()),
            ..RegistryOptions::default()
        })
        .await;
        let image = TestImage::new(
            vec![LayerBuilder::new().busybox().build(Compression::Gzip)],
            ImageConfig::default(),
        );
        registry.push(REPO, "v1", &image).await;
        let pushed = issuer.take_requests();
        // The registry lists the actions in no fixed order.
        let asks_to_push = |r: &TokenRequest| {
            r.scopes().iter().any(|scope| {
                scope
                    .strip_prefix(&format!("repository:{REPO}:"))
                    .is_some_and(|actions| actions.split(',').any(|a| a == "push"))
            })
        };
        assert!(
            pushed
                .iter()
                .any(|r| r.has_credentials() && asks_to_push(r) && r.status == 200),
            "the harness pushed with a push token: {pushed:#?}"
        );
        let daemon = Setup::new()
            .toml(&format!(
                "[registries.\"{}\"]\ninsecure = true",
                registry.host()
            ))
            .start()
            .await;
        Fixture {
            daemon,
            registry,
            issuer,
            image,
        }
    }

    fn name(&self) -> String {
        format!("{}/{REPO}:v1", self.registry.host())
    }

    async fn client(&self) -> ImageServiceClient<Channel> {
        self.daemon.images().await
    }

    async fn pull(&self, auth: Option<AuthConfig>) -> Result<String, tonic::Status> {
        self.client()
            .await
            .pull_image(PullImageRequest {
                image: Some(spec(&self.name())),
                auth,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    async fn remove(&self) {
        self.client()
            .await
            .remove_image(RemoveImageRequest {
                image: Some(spec(&self.name())),
            })
            .await
            .expect("RemoveImage");
    }

    /// The id ImageStatus reports for the image, if berth has it.
    async fn stored(&self) -> Option<String> {
        self.client()
            .await
            .image_status(ImageStatusRequest {
                image: Some(spec(&self.name())),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
            .map(|image| image.id)
    }
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

fn password(password: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: "berth".into(),
        password: password.into(),
        ..Default::default()
    })
}

/// Whether `request` is a token request for pulling [`REPO`] from the test registry.
fn asks_to_pull(request: &TokenRequest) -> bool {
    request.method == "GET"
        && request.path == "/token"
        && request.param("service") == Some(SERVICE)
        && request.scopes() == [format!("repository:{REPO}:pull")]
}

#[tokio::test]
async fn credentials_buy_a_pull_token_from_the_realm() {
    let fixture = Fixture::start(false).await;

    let id = fixture.pull(password("s3cret")).await.expect("pull");
    assert_eq!(
        id, fixture.image.config_digest,
        "image_ref is the config id"
    );
    assert_eq!(
        fixture.stored().await.as_deref(),
        Some(fixture.image.config_digest.as_str())
    );

    let requests = fixture.issuer.requests();
    assert!(
        requests
            .iter()
            .any(|r| asks_to_pull(r) && r.user.as_deref() == Some("berth") && r.status == 200),
        "berth asked the realm for a pull token with its credentials: {requests:#?}"
    );
    assert!(
        requests.iter().all(TokenRequest::has_credentials),
        "berth never asked without its credentials: {requests:#?}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_nothing_is_stored() {
    let fixture = Fixture::start(false).await;

    let err = fixture.pull(password("wrong")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let message = err.message();
    assert!(
        message.contains("refused") && message.contains("credentials"),
        "the message says the credentials were refused: {message}"
    );
    assert_eq!(fixture.stored().await, None);

    let requests = fixture.issuer.requests();
    assert!(
        requests
            .iter()
            .any(|r| asks_to_pull(r) && r.has_credentials() && r.status == 401),
        "the issuer refused berth's credentials: {requests:#?}"
    );
}

#[tokio::test]
async fn no_credentials_are_refused_when_the_issuer_allows_no_anonymous_pulls() {
    let fixture = Fixture::start(false).await;

    let err = fixture.pull(None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("needs credentials"),
        "{}",
        err.message()
    );
    assert_eq!(fixture.stored().await, None);

    // The issuer hands out a token granting nothing, which the registry then refuses.
    let requests = fixture.issuer.requests();
    assert!(
        requests
            .iter()
            .any(|r| asks_to_pull(r) && !r.has_credentials() && r.status == 200),
        "berth asked for an anonymous token: {requests:#?}"
    );
}

#[tokio::test]
async fn no_credentials_pull_when_the_issuer_allows_anonymous_pulls() {
    let fixture = Fixture::start(true).await;

    let id = fixture.pull(None).await.expect("anonymous pull");
    assert_eq!(id, fixture.image.config_digest);

    let requests = fixture.issuer.requests();
    assert!(
        requests.iter().any(|r| asks_to_pull(r) && r.status == 200),
        "berth asked for a pull token: {requests:#?}"
    );
    assert!(
        !requests.iter().any(TokenRequest::has_credentials),
        "berth had no credentials to send: {requests:#?}"
    );
}

#[tokio::test]
async fn a_registry_token_goes_to_the_registry_as_it_is() {
    let fixture = Fixture::start(false).await;

    let auth = AuthConfig {
        registry_token: fixture.issuer.mint(REPO, &["pull"]),
        ..Default::default()
    };
    let id = fixture.pull(Some(auth)).await.expect("pull with a token");
    assert_eq!(id, fixture.image.config_digest);
    let requests = fixture.issuer.requests();
    assert!(
        requests.is_empty(),
        "berth did not ask the issuer: {requests:#?}"
    );
}

#[tokio::test]
async fn a_token_bought_with_credentials_serves_no_pull_without_them() {
    let fixture = Fixture::start(false).await;
    fixture.pull(password("s3cret")).await.expect("pull");
    fixture.remove().await;
    assert_eq!(fixture.stored().await, None);

    // The kubelet sends each pod's own pull secret: the token berth got with one pod's
    // credentials must not let a pull with other credentials, or none, through.
    let wrong = fixture.pull(password("wrong")).await.map_err(|e| e.code());
    fixture.remove().await;
    let anonymous = fixture.pull(None).await.map_err(|e| e.code());
    assert_eq!(
        (wrong, anonymous),
        (
            Err(tonic::Code::Unauthenticated),
            Err(tonic::Code::Unauthenticated)
        ),
        "(wrong password, no credentials) after a pull with the right ones"
    );
    assert_eq!(fixture.stored().await, None);
}
