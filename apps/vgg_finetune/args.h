// Command-line flags of vgg_finetune's subcommands: each subcommand declares its flags
// (name, default, help); parsing refuses unknown flags and checks ranges, and --help prints
// the declarations. Errors are kiln::Error with one line naming the flag and the value.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln::app {

struct FlagSpec {
  std::string name;        // without the leading "--"
  std::string value_name;  // "N", "DIR", ...; empty for a switch (no value)
  std::string def;         // default as text ("" = none)
  std::string help;
};

class Flags {
 public:
  Flags(std::string command, std::string synopsis, std::string description, std::vector<FlagSpec> specs,
        std::string examples = "");

  // Parses argv[first..argc). Returns false when --help was asked (and printed to stdout).
  bool parse(int argc, char** argv, int first);
  std::string help() const;

  // True when the flag was given on the command line.
  bool given(const std::string& name) const;
  // Replaces a flag's default (it stays "not given"): a resume's recipe from its config.txt.
  void set_default(const std::string& name, const std::string& value);
  std::string str(const std::string& name) const;
  bool on(const std::string& name) const;
  int64_t integer(const std::string& name, int64_t lo, int64_t hi) const;
  double real(const std::string& name, double lo, double hi) const;
  // One of `choices`.
  std::string choice(const std::string& name, const std::vector<std::string>& choices) const;

  const std::vector<std::string>& positional() const { return positional_; }
  // "key = value" lines of every flag with a value (given or default), for config.txt.
  std::string dump() const;

 private:
  const FlagSpec& spec(const std::string& name) const;

  std::string command_, synopsis_, description_, examples_;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  std::vector<std::string> given_flags_;
};

// `word` as one shell word, for the commands the app prints for pasting: as it is when it
// holds only characters no shell treats specially, else in single quotes.
std::string shell_quote(const std::string& word);

}  // namespace kiln::app
