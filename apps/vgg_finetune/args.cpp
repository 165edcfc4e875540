// Flag parsing for vgg_finetune (see args.h).
#include "apps/vgg_finetune/args.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace kiln::app {

Flags::Flags(std::string command, std::string synopsis, std::string description, std::vector<FlagSpec> specs,
             std::string examples)
    : command_(std::move(command)),
      synopsis_(std::move(synopsis)),
      description_(std::move(description)),
      examples_(std::move(examples)),
      specs_(std::move(specs)) {
  for (const FlagSpec& s : specs_) values_[s.name] = s.def;
}

const FlagSpec& Flags::spec(const std::string& name) const {
  for (const FlagSpec& s : specs_)
    if (s.name == name) return s;
  KILN_FAIL("internal: flag --", name, " not declared for ", command_);
}

namespace {

// A switch's "=VALUE" as Flags stores it: "1" on, "" off (as when not given).
std::string switch_value(const std::string& name, const std::string& value) {
  for (const char* on : {"1", "true", "yes", "on"})
    if (value == on) return "1";
  for (const char* off : {"0", "false", "no", "off"})
    if (value == off) return "";
  KILN_FAIL("--", name, " is a switch: give it alone (on), or as --", name, "=1 or --", name, "=0 (off), got '--",
            name, "=", value, "'");
}

}  // namespace

bool Flags::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (a.rfind("--", 0) != 0 || a == "--") {
      KILN_CHECK(!(a.size() > 1 && a[0] == '-'), "unknown flag '", a, "' (see vgg_finetune ", command_, " --help)");
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const FlagSpec* s = nullptr;
    for (const FlagSpec& c : specs_)
      if (c.name == name) s = &c;
    KILN_CHECK(s != nullptr, "unknown flag '--", name, "' (see vgg_finetune ", command_, " --help)");
    if (s->value_name.empty()) {
      // A switch may be given off (--no-augment=0): the only way to turn off one that a
      // resume took from the run's config.txt.
      value = has_value ? switch_value(name, value) : "1";
    } else if (!has_value) {
      KILN_CHECK(i + 1 < argc, "--", name, " needs a value (", s->value_name, ")");
      // "--model-dir --no-augment": the value was forgotten, and taking the next flag as it
      // would drop that flag silently. A value that really starts with "--" goes after '='.
      const std::string next = argv[i + 1];
      KILN_CHECK(next.rfind("--", 0) != 0, "--", name, " needs a value (", s->value_name, "), but the next argument is '",
                 next, "', a flag (a value that starts with '--' is written --", name, "=VALUE)");
      value = argv[++i];
    }
    values_[name] = value;
    given_flags_.push_back(name);
  }
  return true;
}

void Flags::set_default(const std::string& name, const std::string& value) {
  spec(name);
  values_[name] = value;
}

bool Flags::given(const std::string& name) const {
  spec(name);
  for (const std::string& g : given_flags_)
    if (g == name) return true;
  return false;
}

std::string Flags::str(const std::string& name) const {
  spec(name);
  return values_.at(name);
}

bool Flags::on(const std::string& name) const { return str(name) == "1"; }

int64_t Flags::integer(const std::string& name, int64_t lo, int64_t hi) const {
  const std::string v = str(name);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  KILN_CHECK(!v.empty() && end && *end == '\0' && errno == 0 && x >= lo && x <= hi, "--", name,
             " must be an integer in [", lo, ", ", hi, "], got '", v, "'");
  return x;
}

double Flags::real(const std::string& name, double lo, double hi) const {
  const std::string v = str(name);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  KILN_CHECK(!v.empty() && end && *end == '\0' && std::isfinite(x) && x >= lo && x <= hi, "--", name,
             " must be a number in [", lo, ", ", hi, "], got '", v, "'");
  return x;
}

std::string Flags::choice(const std::string& name, const std::vector<std::string>& choices) const {
  const std::string v = str(name);
  std::string all;
  for (const std::string& c : choices) {
    if (c == v) return v;
    all += (all.empty() ? "" : "|") + c;
  }
  KILN_FAIL("--", name, " must be one of ", all, ", got '", v, "'");
}

std::string Flags::help() const {
  std::string out = "usage: vgg_finetune " + command_ + " " + synopsis_ + "\n\n" + description_ + "\n\nflags:\n";
  for (const FlagSpec& s : specs_) {
    std::string left = "  --" + s.name + (s.value_name.empty() ? "" : " " + s.value_name);
    if (left.size() < 26) left.resize(26, ' ');
    else left += "\n" + std::string(26, ' ');
    out += left + s.help;
    if (!s.def.empty() && !s.value_name.empty()) out += " (default " + s.def + ")";
    out += "\n";
  }
  out += "  --help                  this text\n";
  if (!examples_.empty()) out += "\nexamples:\n" + examples_;
  return out;
}

std::string Flags::dump() const {
  std::string out;
  for (const FlagSpec& s : specs_)
    if (!s.value_name.empty() || on(s.name)) out += s.name + " = " + values_.at(s.name) + "\n";
  return out;
}

std::string shell_quote(const std::string& word) {
  const bool plain = !word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                            "0123456789_./:=@%+,-") == std::string::npos;
  if (plain) return word;
  std::string out = "'";
  for (const char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace kiln::app
