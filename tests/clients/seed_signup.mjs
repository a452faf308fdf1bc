// The JavaScript example of the public signup page (shared/seed/api-auth-signup.txt),
// verbatim. tests/clients/run.sh swaps in the local base URL, and a real email
// address for "[email protected]", the page host's email-obfuscation stand-in.
const response = await fetch('https://api.kaggleingest.com/api/auth/signup', {
  method: 'POST',
  headers: {
    'Content-Type': 'application/json',
  },
  body: JSON.stringify({
    email: '[email protected]',
    password: 'securepassword123'
  })
});

const data = await response.json();
console.log('Your API key:', data.api_key);
