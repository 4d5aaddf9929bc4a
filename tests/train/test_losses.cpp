// model/ops/preference_loss.h against torch autograd of the spec's formulas written as TRL computes them
// (tests/fixtures/train/losses.json, from dev/reference/make_loss_fixtures.py): per-pair losses, z, rewards
// and the gradient of the batch loss in S_w, S_l, in double (≤ 1e-6 relative) and float (finite at |z| = 100).
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/error.h"
#include "tests/test_util.h"
#include "train/loss_flags.h"
#include "model/ops/preference_loss.h"

namespace stapo {
namespace {

using nlohmann::json;

LossConfig config_from_json(const json& c) {
  LossConfig config = loss_defaults(loss_from_name(c.at("loss").get<std::string>()));
  config.reward = reward_from_name(c.at("reward").get<std::string>());
  config.beta = c.at("beta").get<double>();
  config.gamma = c.value("gamma", config.gamma);
  config.margin_left = c.value("margin_left", config.margin_left);
  config.margin_right = c.value("margin_right", config.margin_right);
  config.right_margin = right_margin_from_name(c.value("right_margin", std::string("absolute")));
  config.lambda_right = c.value("lambda_right", config.lambda_right);
  config.label_smoothing = c.value("label_smoothing", 0.0);
  config.orpo_lambda = c.value("orpo_lambda", config.orpo_lambda);
  config.alpha = c.value("alpha", 0.0);
  return config;
}

// |out − ref| ≤ rtol·|ref| + atol, with atol far below anything the losses produce except cancellation to 0.
void expect_close(double out, double ref, const std::string& what, double rtol = 1e-6, double atol = 1e-12) {
  EXPECT_TRUE(std::isfinite(out)) << what;
  EXPECT_LE(std::fabs(out - ref), rtol * std::fabs(ref) + atol) << what << ": " << out << " vs " << ref;
}

template <typename T>
std::vector<PairLogps<T>> pairs_from_json(const json& p) {
  std::vector<PairLogps<T>> pairs(p.at("logp_chosen").size());
  for (size_t i = 0; i < pairs.size(); i++)
    pairs[i] = {T(p["logp_chosen"][i].get<double>()), T(p["logp_rejected"][i].get<double>()),
                T(p["len_chosen"][i].get<double>()),  T(p["len_rejected"][i].get<double>()),
                T(p["ref_chosen"][i].get<double>()),  T(p["ref_rejected"][i].get<double>())};
  return pairs;
}

TEST(Losses, MatchTorchAutogradInDouble) {
  json fixture = test::json_fixture("train/losses.json", 2);
  ASSERT_GE(fixture["cases"].size(), 54u);
  for (const json& c : fixture["cases"]) {
    const std::string name = c["name"];
    LossConfig config = config_from_json(c["config"]);
    loss_config_validate(config, true);
    auto pairs = pairs_from_json<double>(c["pairs"]);
    const json& e = c["expected"];
    const double B = double(pairs.size());
    double chosen_tokens = 0;
    for (auto& p : pairs) chosen_tokens += p.len_chosen;
    const double nll_weight = B / chosen_tokens;
    double batch_loss = 0;
    for (size_t i = 0; i < pairs.size(); i++) {
      PairLoss<double> full = loss_pair(config, pairs[i], nll_weight);
      PairLoss<double> pref = loss_pair(config, pairs[i], 0.0);  // TRL's per-pair `losses`: no NLL term
      const std::string at = name + " pair " + std::to_string(i);
      expect_close(pref.loss, e["pair_losses"][i], at + " loss");
      expect_close(full.z, e["z"][i], at + " z");
      expect_close(full.delta, e["delta"][i], at + " delta");
      expect_close(full.reward_chosen, e["rewards_chosen"][i], at + " rewards/chosen");
      expect_close(full.reward_rejected, e["rewards_rejected"][i], at + " rewards/rejected");
      expect_close(full.dloss_dlogp_chosen / B, e["grad_logp_chosen"][i], at + " dL/dS_w");
      expect_close(full.dloss_dlogp_rejected / B, e["grad_logp_rejected"][i], at + " dL/dS_l");
      batch_loss += full.loss / B;
    }
    expect_close(batch_loss, e["batch_loss"], name + " batch loss");
  }
}

// Float (the GPU's type) at the extremes: finite everywhere, and close to double.
TEST(Losses, FloatFiniteAndCloseAtExtremes) {
  json fixture = test::json_fixture("train/losses.json", 2);
  for (const json& c : fixture["cases"]) {
    const std::string name = c["name"];
    LossConfig config = config_from_json(c["config"]);
    auto pf = pairs_from_json<float>(c["pairs"]);
    auto pd = pairs_from_json<double>(c["pairs"]);
    for (size_t i = 0; i < pf.size(); i++) {
      PairLoss<float> f = loss_pair(config, pf[i], 0.01f);
      PairLoss<double> d = loss_pair(config, pd[i], 0.01);
      const float values[] = {f.loss, f.z, f.dloss_dz, f.dloss_dlogp_chosen, f.dloss_dlogp_rejected};
      for (float v : values) ASSERT_TRUE(std::isfinite(v)) << name << " pair " << i;
      // float inputs carry ~1e-7 relative rounding of S (values up to ~1e4): compare loosely
      EXPECT_LE(std::fabs(f.loss - d.loss), 1e-3 * (1 + std::fabs(d.loss))) << name << " pair " << i;
      EXPECT_LE(std::fabs(f.dloss_dlogp_chosen - d.dloss_dlogp_chosen), 1e-3 * (1 + std::fabs(d.dloss_dlogp_chosen)))
          << name << " pair " << i;
    }
  }
}

// Far beyond the fixtures: |z| = 1e4 stays finite, with the asymptotic slopes.
TEST(Losses, AsymptoticSlopesWithoutOverflow) {
  for (double z : {-1e4, 1e4}) {
    PairLogps<float> p{float(z / 2.0), 0.f, 1.f, 1.f, 0.f, 0.f};  // avg reward, β = 2: z = 2·S_w
    LossConfig stapo = loss_defaults(LossKind::stapo_sigmoid);
    PairLoss<float> s = loss_pair(stapo, p, 0.f);
    ASSERT_TRUE(std::isfinite(s.loss) && std::isfinite(s.dloss_dz));
    EXPECT_FLOAT_EQ(s.dloss_dz, z < 0 ? -1.f : 1.f);  // pulled back into the band from both sides
    LossConfig simpo = loss_defaults(LossKind::simpo);
    PairLoss<float> o = loss_pair(simpo, p, 0.f);
    ASSERT_TRUE(std::isfinite(o.loss));
    EXPECT_FLOAT_EQ(o.dloss_dz, z < 0 ? -1.f : 0.f);  // one-sided: no force above
  }
}

TEST(Losses, OrpoFiniteAtCertainty) {
  LossConfig c = loss_defaults(LossKind::orpo);
  for (float s_w : {0.0f, -1e-9f}) {
    PairLoss<float> out = loss_pair(c, PairLogps<float>{s_w, -3.0f, 4.f, 2.f, 0.f, 0.f}, 0.25f);
    EXPECT_TRUE(std::isfinite(out.loss) && std::isfinite(out.dloss_dlogp_chosen) &&
                std::isfinite(out.dloss_dlogp_rejected));
  }
}

// Margins in Δ units: for λR = 1 the sigmoid form's gradient vanishes at the band's midpoint (m_l + m_r)/2,
// pushes Δ up below it and down above it.
TEST(Losses, StapoStationaryAtBandCentre) {
  LossConfig c = loss_defaults(LossKind::stapo_sigmoid);
  c.margin_left = 0.35;
  c.margin_right = 2.05;
  const double centre = (c.margin_left + c.margin_right) / 2;
  // avg reward with A_l = −2: Δ = A_w + 2
  const auto at_delta = [&](double delta) { return PairLogps<double>{(delta - 2.0) * 13.0, -18.0, 13.0, 9.0, 0, 0}; };
  const PairLoss<double> out = loss_pair(c, at_delta(centre), 0.0);
  EXPECT_NEAR(out.delta, centre, 1e-12);
  EXPECT_NEAR(out.z, c.beta * centre, 1e-12);
  EXPECT_NEAR(out.dloss_dz, 0.0, 1e-12);
  EXPECT_GT(loss_pair(c, at_delta(centre + 0.3), 0.0).dloss_dz, 0.0);  // above the midpoint: pushed down
  const PairLoss<double> below = loss_pair(c, at_delta(centre - 0.3), 0.0);
  EXPECT_LT(below.dloss_dz, 0.0);  // below: pushed up
}

// saturate: as absolute at or below m_r, flat above it (no push up, no push back), for both forms.
TEST(Losses, SaturateIsFlatAboveTheRightMarginOnly) {
  for (LossKind kind : {LossKind::stapo_sigmoid, LossKind::stapo_hinge}) {
    LossConfig absolute = loss_defaults(kind), saturate = absolute;
    saturate.right_margin = RightMargin::saturate;
    for (double delta : {-3.0, 0.1, 0.55, 0.69, 0.71, 2.0, 40.0}) {
      const PairLogps<double> p{delta * 5.0, 0.0, 5.0, 4.0, 0.0, 0.0};  // avg: Δ = S_w/5
      const PairLoss<double> a = loss_pair(absolute, p, 0.0), s = loss_pair(saturate, p, 0.0);
      if (delta <= absolute.margin_right) {
        EXPECT_EQ(s.loss, a.loss) << loss_name(kind) << " Δ " << delta;
        EXPECT_EQ(s.dloss_dz, a.dloss_dz) << loss_name(kind) << " Δ " << delta;
      } else {
        EXPECT_EQ(s.dloss_dz, 0.0) << loss_name(kind) << " Δ " << delta;
        EXPECT_EQ(s.dloss_dlogp_chosen, 0.0) << loss_name(kind) << " Δ " << delta;
        EXPECT_GT(a.dloss_dz, 0.0) << loss_name(kind) << " Δ " << delta;  // absolute pushes back
        const PairLogps<double> at{absolute.margin_right * 5.0, 0.0, 5.0, 4.0, 0.0, 0.0};
        EXPECT_NEAR(s.loss, loss_pair(absolute, at, 0.0).loss, 1e-12) << "continuous at m_r";
      }
      EXPECT_NEAR(s.delta, delta, 1e-12);
    }
  }
}

std::string validate_error(const LossConfig& c, bool have_reference) {
  try {
    loss_config_validate(c, have_reference);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Losses, ValidationNamesTheFlag) {
  LossConfig c = loss_defaults(LossKind::stapo_sigmoid);
  EXPECT_EQ(validate_error(c, false), "");
  c.margin_right = c.margin_left;
  EXPECT_NE(validate_error(c, false).find("--margin-right"), std::string::npos);
  c.margin_right = c.margin_left - 0.1;
  EXPECT_NE(validate_error(c, false).find("--margin-right"), std::string::npos);
  c = loss_defaults(LossKind::stapo_hinge);
  c.beta = 0.0;
  EXPECT_NE(validate_error(c, false).find("--beta"), std::string::npos);
  c.beta = -1.0;
  EXPECT_NE(validate_error(c, false).find("--beta"), std::string::npos);
  c = loss_defaults(LossKind::dpo);  // sum-ref
  EXPECT_NE(validate_error(c, false).find("--ref precompute"), std::string::npos);
  EXPECT_EQ(validate_error(c, true), "");
  c = loss_defaults(LossKind::ipo);  // avg-ref
  EXPECT_NE(validate_error(c, false).find("avg-ref"), std::string::npos);
  EXPECT_THROW(loss_from_name("dpo2"), Error);
  EXPECT_THROW(right_margin_from_name("clip"), Error);
  EXPECT_EQ(loss_from_name("stapo"), LossKind::stapo_sigmoid);
}

}  // namespace
}  // namespace stapo

namespace stapo {
namespace {

// The loss flags as the trainers and score parse them: a setting the spec rejects is a bad flag (exit 2, the
// flag named), as CLI11's own checks.
int parse_loss_flags(const std::vector<std::string>& args, std::string* err) {
  CLI::App app{"test"};
  app.name("test");
  LossFlags flags;
  loss_flags_add(app, flags);
  std::vector<std::string> argv_storage = {"test"};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  const int code = parse_cli(app, int(argv.size()), argv.data());
  *err = testing::internal::GetCapturedStderr();
  return code;
}

TEST(LossFlags, AblationsThatBreakTheSpecExitTwoNamingTheFlag) {
  std::string err;
  EXPECT_EQ(parse_loss_flags({"--loss", "stapo", "--margin-left", "0.5", "--margin-right", "0.7"}, &err), -1) << err;
  EXPECT_EQ(parse_loss_flags({"--margin-left", "0.7", "--margin-right", "0.7"}, &err), 2);
  EXPECT_NE(err.find("--margin-right"), std::string::npos) << err;
  EXPECT_EQ(parse_loss_flags({"--margin-right", "0.3"}, &err), 2);  // below the default m_l = 0.5
  EXPECT_NE(err.find("--margin-right"), std::string::npos) << err;
  EXPECT_EQ(parse_loss_flags({"--right-margin", "clip"}, &err), 2);
  EXPECT_NE(err.find("--right-margin"), std::string::npos) << err;
  EXPECT_EQ(parse_loss_flags({"--loss", "stapo", "--right-margin", "saturate"}, &err), -1) << err;
  EXPECT_EQ(parse_loss_flags({"--beta", "0"}, &err), 2);
  EXPECT_NE(err.find("--beta"), std::string::npos) << err;
}

}  // namespace
}  // namespace stapo
